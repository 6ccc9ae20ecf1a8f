"""What keeps a gateway process running and observable: background tasks, the stall monitor and
its lease, logs, metrics."""
