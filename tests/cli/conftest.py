"""The CLI commands that talk to the gateway (`watch`) are tested against a real one."""

from gateway.conftest import start_gateway  # noqa: F401 -- the same fixture the gateway tests use
