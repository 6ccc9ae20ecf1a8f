"""The operator's price table: what a model's tokens cost, and since when.

A table lists, per model, price versions in USD per million tokens (input, output, and an
optional cached-input price), each with the date it takes effect. A call is priced at the
version in effect when it finished, and its cost is written into its event: a later price
change never rewrites a past run.

Costs are integers in nano-USD (1e-9 USD): a stats-hash counter adds them exactly (HINCRBY),
and 2^53 nano-USD is about 9 million USD, well past any run. $2.50 per million tokens is 2,500
nano-USD per token; a fractional nano-USD per call is rounded half to even.

File format (JSON; `LIVESTATS_PRICES_FILE`, or the same document inline in `LIVESTATS_PRICES`):

    {"models": {"gpt-4o": [{"effective_from": "2026-01-01", "input_per_mtok": 2.5,
                            "output_per_mtok": 10, "cached_input_per_mtok": 1.25}]}}

A model the table does not name has no price: its cost is unknown (None), never 0.
"""

from __future__ import annotations

import bisect
import datetime as dt
import re
from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import LivestatsError
from .ids import MODEL_PATTERN

NANO_PER_USD = 1_000_000_000
_NANO_PER_TOKEN_PER_MTOK = Decimal(NANO_PER_USD) / Decimal(1_000_000)  # $1/Mtok = 1,000 nano-USD/token
MAX_PRICE_PER_MTOK = 1_000_000.0  # USD: far above any real price, catches a unit mix-up (per token)


class InvalidPriceTable(LivestatsError):
    """The price table file or document does not parse or breaks a rule (see the message)."""


class PriceVersion(BaseModel):
    """One model's prices from `effective_from` (00:00 UTC that day) until the next version."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    effective_from: dt.date
    input_per_mtok: float = Field(ge=0, le=MAX_PRICE_PER_MTOK, allow_inf_nan=False)
    output_per_mtok: float = Field(ge=0, le=MAX_PRICE_PER_MTOK, allow_inf_nan=False)
    cached_input_per_mtok: float | None = Field(None, ge=0, le=MAX_PRICE_PER_MTOK, allow_inf_nan=False)

    @property
    def effective_ms(self) -> int:
        start = dt.datetime.combine(self.effective_from, dt.time(), tzinfo=dt.UTC)
        return int(start.timestamp() * 1000)


class PriceTableDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    models: dict[str, list[PriceVersion]]

    @field_validator("models")
    @classmethod
    def _versions_are_ordered_and_distinct(cls, models: dict[str, list[PriceVersion]]) -> dict[str, list[PriceVersion]]:
        for name, versions in models.items():
            if not re.match(MODEL_PATTERN, name):
                raise ValueError(f"model name {name!r} must match {MODEL_PATTERN}")
            if not versions:
                raise ValueError(f"model {name!r} has no price version")
            dates = [v.effective_from for v in versions]
            if len(set(dates)) != len(dates):
                raise ValueError(f"model {name!r} has two versions effective on the same day")
        return {n: sorted(vs, key=lambda v: v.effective_from) for n, vs in models.items()}


class PriceTable:
    """Lookup of the price version in effect for a model at a time."""

    def __init__(self, doc: PriceTableDoc | None = None) -> None:
        self._versions: dict[str, list[PriceVersion]] = dict(doc.models) if doc else {}
        self._starts = {m: [v.effective_ms for v in vs] for m, vs in self._versions.items()}

    @property
    def models(self) -> list[str]:
        """The models that have a price: the default allowlist of the `model` metric label."""
        return sorted(self._versions)

    def versions(self, model: str) -> list[PriceVersion]:
        return list(self._versions.get(model, []))

    def price_at(self, model: str | None, ts_ms: int) -> PriceVersion | None:
        """The version in effect at `ts_ms`; None for an unknown model or a time before its first."""
        if model is None or model not in self._versions:
            return None
        i = bisect.bisect_right(self._starts[model], ts_ms) - 1
        return self._versions[model][i] if i >= 0 else None

    def cost_nusd(
        self, model: str | None, ts_ms: int, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0
    ) -> int | None:
        """The cost in nano-USD of one attempt's usage, or None when the model has no price then.
        Cached input tokens are part of `input_tokens`; those are priced at the cached price when
        the version has one."""
        price = self.price_at(model, ts_ms)
        if price is None:
            return None
        return cost_nusd(price, input_tokens, output_tokens, cached_input_tokens)


def cost_nusd(price: PriceVersion, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> int:
    cached = min(max(cached_input_tokens, 0), input_tokens) if price.cached_input_per_mtok is not None else 0
    nano = (
        Decimal(input_tokens - cached) * Decimal(str(price.input_per_mtok))
        + Decimal(cached) * Decimal(str(price.cached_input_per_mtok or 0))
        + Decimal(output_tokens) * Decimal(str(price.output_per_mtok))
    ) * _NANO_PER_TOKEN_PER_MTOK
    return int(nano.to_integral_value(rounding=ROUND_HALF_EVEN))


def usd(nano: int | None) -> float | None:
    return None if nano is None else nano / NANO_PER_USD


def parse_price_table(document: bytes | str | Mapping[str, object]) -> PriceTable:
    try:
        raw = orjson.loads(document) if isinstance(document, bytes | str) else document
        return PriceTable(PriceTableDoc.model_validate(raw))
    except orjson.JSONDecodeError as exc:
        raise InvalidPriceTable(f"price table is not JSON: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidPriceTable(f"price table is invalid: {problems}") from exc


def load_price_table(path: str | None, inline: str | None) -> PriceTable:
    """The table from a file or an inline document (not both); an empty table when neither is set."""
    if path and inline:
        raise InvalidPriceTable("set LIVESTATS_PRICES_FILE or LIVESTATS_PRICES, not both")
    if path:
        try:
            return parse_price_table(Path(path).read_bytes())
        except OSError as exc:
            raise InvalidPriceTable(f"cannot read the price table {path}: {exc}") from exc
    if inline:
        return parse_price_table(inline)
    return PriceTable()
