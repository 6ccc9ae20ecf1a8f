"""The HTTP, WebSocket and SSE endpoints: each module owns its routes; they use access and the fan-out core."""
