"""The gateway's REST API and SSE stream from the command line (httpx), for commands that work
remotely with a token instead of a Redis URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from livestats_shared.errors import LivestatsError

DEFAULT_GATEWAY = "http://127.0.0.1:8000"
# A live stream gets the gateway's heartbeat every few seconds: longer silence is a dead link.
_STREAM_READ_TIMEOUT_S = 30.0


def page_url(config: Any, run_id: str) -> str:
    """The run's page on the dashboard: on the gateway the command used, else the default one."""
    return f"{(config.gateway_url or DEFAULT_GATEWAY).rstrip('/')}/runs/{run_id}"


class GatewayError(LivestatsError):
    """The gateway refused a request (`status` set) or could not be reached (`status` None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def transient(self) -> bool:
        """Worth trying again: unreachable, overloaded, or Redis away behind it."""
        return self.status is None or self.status in (429, 502, 503, 504)


@dataclass(frozen=True)
class SseMessage:
    kind: str  # an event type (`call.succeeded`) or a control (`hello`, `live`, `reset`, ...)
    data: dict[str, Any]
    id: str | None  # the stream id, for events


class GatewayClient:
    def __init__(self, url: str | None, token: str | None, *, timeout_s: float = 10.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = (url or DEFAULT_GATEWAY).rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout_s)

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request; the answer's JSON body, or GatewayError."""
        try:
            answer = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise GatewayError(f"gateway unreachable at {self.url}: {type(exc).__name__}: {exc}") from exc
        if not answer.is_success:
            raise GatewayError(f"gateway answered {answer.status_code}: {_detail(answer)}", answer.status_code)
        return answer.json()

    async def post_events(self, run_id: str, events: list[dict[str, Any]]) -> dict[str, Any]:
        """POST /api/runs/{id}/events; the answer's body (accepted, last_seq, last_id)."""
        body: dict[str, Any] = await self.call("POST", f"/api/runs/{run_id}/events", json={"events": events})
        return body

    async def stream(self, run_id: str, since: str | None) -> AsyncIterator[SseMessage]:
        """The run's Server-Sent Events after `since` (all of them if None), until the gateway
        closes the stream. Raises GatewayError when the link fails or is refused."""
        headers = {"Last-Event-ID": since} if since else {}
        timeout = httpx.Timeout(self._http.timeout.connect, read=_STREAM_READ_TIMEOUT_S)
        try:
            async with self._http.stream(
                "GET", f"/api/runs/{run_id}/stream", headers=headers, timeout=timeout
            ) as answer:
                if not answer.is_success:
                    await answer.aread()
                    raise GatewayError(f"gateway answered {answer.status_code}: {_detail(answer)}", answer.status_code)
                fields: dict[str, str] = {}
                async for line in answer.aiter_lines():
                    if line:
                        name, _, value = line.partition(":")
                        fields[name] = value.removeprefix(" ")
                        continue
                    if "data" in fields:
                        yield SseMessage(fields.get("event", "message"), orjson.loads(fields["data"]), fields.get("id"))
                    fields = {}
        except httpx.HTTPError as exc:
            raise GatewayError(f"stream from {self.url} broke: {type(exc).__name__}: {exc}") from exc


def _detail(answer: httpx.Response) -> str:
    try:
        detail = answer.json().get("detail", answer.text)
    except ValueError:
        return answer.text[:300]
    if isinstance(detail, list):  # FastAPI's 422: name each field at fault
        return "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in detail)
    return str(detail)
