"""The designs livestats is compared with, as small standalone ASGI apps serving the same
WebSocket workload (`/ws/runs/{run_id}`): (a) polling.py, (b) xread.py, (c) broadcast.py."""
