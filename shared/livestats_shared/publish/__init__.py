"""Publishing events: async Publisher (one per process) and a thread-safe SyncPublisher."""

from .publisher import NO_RUN, Published, Publisher
from .sync import SyncPublisher

__all__ = ["NO_RUN", "Published", "Publisher", "SyncPublisher"]
