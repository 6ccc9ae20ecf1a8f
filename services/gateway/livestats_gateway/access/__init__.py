"""Who may do what, and how much: authentication, re-checks, connection and per-principal limits."""
