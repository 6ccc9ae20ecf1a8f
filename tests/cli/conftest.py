"""The CLI commands that talk to the gateway (`watch`) are tested against a real one."""

from gateway.conftest import make_token, start_gateway  # noqa: F401 -- the fixtures the gateway tests use
