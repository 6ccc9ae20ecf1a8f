"""Choosing runs to analyse: by creation time, owner, name and tag, on the stats hash alone (so
the index page filter needs no event read)."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from pydantic import BaseModel, ConfigDict, Field


class RunFilter(BaseModel):
    """Every condition set must hold; an unset one accepts every run."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    since: int | None = Field(None, ge=0, description="Created at or after, epoch ms.")
    until: int | None = Field(None, ge=0, description="Created before, epoch ms.")
    owner: str | None = None
    name: str | None = Field(None, description="Case-insensitive substring of the run's name.")
    tag: str | None = None

    def accepts(self, stats: Mapping[str, str]) -> bool:
        created = stats.get("created_ts")
        created_ms = int(created) if created is not None and created.isdigit() else None
        if self.since is not None and (created_ms is None or created_ms < self.since):
            return False
        if self.until is not None and (created_ms is None or created_ms >= self.until):
            return False
        if self.owner is not None and stats.get("owner") != self.owner:
            return False
        if self.name is not None and self.name.lower() not in stats.get("name", "").lower():
            return False
        return self.tag is None or self.tag in _tags(stats)


def _tags(stats: Mapping[str, str]) -> list[str]:
    raw = stats.get("tags")
    if raw is None:
        return []
    tags = orjson.loads(raw)
    return [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []
