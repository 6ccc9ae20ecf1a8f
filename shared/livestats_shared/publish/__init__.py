"""Publishing events: async Publisher (one per process) and a thread-safe SyncPublisher."""

from .gate import EventRefused, RefusalCode
from .publisher import NO_RUN, Published, PublishedAll, Publisher
from .sync import SyncPublisher

__all__ = ["NO_RUN", "EventRefused", "Published", "PublishedAll", "Publisher", "RefusalCode", "SyncPublisher"]
