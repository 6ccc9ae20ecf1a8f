"""Fair share of worker slots across principals (docs/scheduling.md)."""

from .scheduler import QueuePlace, Scheduler

__all__ = ["QueuePlace", "Scheduler"]
