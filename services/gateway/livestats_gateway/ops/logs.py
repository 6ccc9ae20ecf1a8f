"""A log filter that masks credentials wherever they would appear: uvicorn logs WebSocket
handshake headers at debug level (Authorization, the bearer subprotocol, the session cookie),
and a Redis URL may carry a password. Secrets never reach a log line, whatever the level."""

from __future__ import annotations

import logging
import re

from livestats_shared.redis_client import redact_url

_PATTERNS = [
    (re.compile(r"(lsk_[0-9a-f]{12}_)[A-Za-z0-9_-]+"), r"\1***"),
    (re.compile(r"(?i)(\bbearer\s+)[^\s'\",;]+"), r"\1***"),
    (re.compile(r"(livestats\.bearer\.)[^\s'\",;]+"), r"\1***"),
    (re.compile(r"(livestats_session=)[^\s'\",;]+"), r"\1***"),
]
# Where records are created: uvicorn.error carries the websockets library's handshake logs.
_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "livestats", "fastapi", "starlette")


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return redact_url(text)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


_FILTER = RedactSecrets()


def install_redaction() -> None:
    """Attach the filter to the loggers that create records and to every handler the root and
    uvicorn loggers have (a logger's filter does not see records its children propagate)."""
    for name in ("", *_LOGGERS):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
