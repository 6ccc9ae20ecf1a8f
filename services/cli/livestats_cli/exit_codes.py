"""Exit codes of every `livestats` command (documented in main's docstring, README and docs/cli.md)."""

EXIT_OK = 0
EXIT_RUN_FAILED = 1  # the run ended but not `succeeded` (commands that wait), or a service refused
EXIT_ERROR = 1  # the command ran but could not do all of its work (e.g. export skipped entries)
EXIT_BAD_INPUT = 2  # invalid spec, run id, file or arguments
EXIT_NOT_FOUND = 3  # no such run
EXIT_UNAVAILABLE = 4  # Redis (or the gateway) unreachable
EXIT_LAYOUT = 5  # the database's key layout is not this version's (`livestats migrate`; docs/keys.md)
EXIT_BROKEN_PIPE = 141  # our reader closed the pipe (`| head`): 128 + SIGPIPE, as the shell reports it
