"""The gateway's REST API from the command line (httpx), for commands that work remotely."""

from __future__ import annotations

from typing import Any

import httpx
from livestats_shared.errors import LivestatsError


class GatewayError(LivestatsError):
    """The gateway refused a request (`status` set) or could not be reached (`status` None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def transient(self) -> bool:
        """Worth trying again: unreachable, overloaded, or Redis away behind it."""
        return self.status is None or self.status in (429, 502, 503, 504)


class GatewayClient:
    def __init__(self, url: str, token: str | None, *, timeout_s: float = 10.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def post_events(self, run_id: str, events: list[dict[str, Any]]) -> dict[str, Any]:
        """POST /api/runs/{id}/events; the answer's body (accepted, last_seq, last_id)."""
        try:
            answer = await self._http.post(f"/api/runs/{run_id}/events", json={"events": events})
        except httpx.HTTPError as exc:
            raise GatewayError(f"gateway unreachable at {self._http.base_url}: {type(exc).__name__}: {exc}") from exc
        if answer.status_code != 200:
            raise GatewayError(f"gateway answered {answer.status_code}: {_detail(answer)}", answer.status_code)
        body: dict[str, Any] = answer.json()
        return body


def _detail(answer: httpx.Response) -> str:
    try:
        detail = answer.json().get("detail", answer.text)
    except ValueError:
        return answer.text[:300]
    if isinstance(detail, list):  # FastAPI's 422: name each field at fault
        return "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in detail)
    return str(detail)
