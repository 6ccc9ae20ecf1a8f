"""The livestats gateway: WebSocket and SSE fan-out of run streams, and the REST API."""
