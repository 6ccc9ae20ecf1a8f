"""`livestats up` (what `make run` runs): the whole stack on this machine, one command.

Starts the embedded server (unless REDIS_URL is set), a worker and the gateway (on 127.0.0.1),
submits the demo run, shows it live, and on Ctrl-C or SIGTERM stops everything it started:
the gateway first (its clients are closed while Redis is still there), then the worker (its
runs end `cancelled` and its events are flushed), then the server (which writes its data to disk).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import subprocess
import sys
from importlib.resources import files
from pathlib import Path
from typing import TextIO

from livestats_shared import keys, layout, queue_server
from livestats_shared.control import submit_run
from livestats_shared.publish import Publisher
from livestats_shared.redis_client import UNAVAILABLE, connect, redact_url
from livestats_shared.spec import RunSpec
from redis.asyncio import Redis

from . import children, local_prometheus
from .config import CliConfig
from .console import Console
from .embedded import EmbeddedServer, free_port, port_in_use
from .exit_codes import EXIT_LAYOUT, EXIT_OK
from .follow import ProgressView, follow
from .local_auth import (
    create_local_token,
    keep_renewing,
    load_or_create_password,
    password_path,
    renewal_stopped,
    revoke_local_token,
)
from .migrate import migrate

_GATEWAY_START_S = 20.0  # imports and binds in about a second; generous for a busy machine
LOCAL_PRINCIPAL = "local-admin"  # owns the demo run and the session's login token
_GATEWAY_STOP_S = 15.0  # its own grace for open streams is 5 s by default


def demo_spec(*, failing: bool = False) -> RunSpec:
    """The bundled demo: it succeeds, with retries that recover its failures; `failing` is the
    same run with a failure rate that spends its retry budget (`make run ARGS=--demo-failing`)."""
    name = "demo-failing.json" if failing else "demo.json"
    return RunSpec.model_validate_json((files("livestats_cli") / name).read_text())


async def up(config: CliConfig, *, spec: RunSpec | None, exit_after_run: bool, prometheus: bool = False) -> int:
    # `make run | tee log` then Ctrl-C: tee dies with the same SIGINT, and the next print would
    # raise BrokenPipeError in the middle of the shutdown. Lines go to up.log as well.
    out = Console(config.data_dir / "up.log")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # SIGHUP: the terminal went away; stop as cleanly as for Ctrl-C.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)

    server: EmbeddedServer | None = None
    worker: subprocess.Popen[bytes] | None = None
    gateway: subprocess.Popen[bytes] | None = None
    prometheus_proc: subprocess.Popen[bytes] | None = None
    token_id: str | None = None
    renewer: asyncio.Task[None] | None = None
    try:
        if config.redis_url:
            url = config.redis_url
            out.say(f"using Redis at {redact_url(url)}")
        else:
            if not _lock_data_dir(config.data_dir):
                out.say(
                    f"error: another `livestats up` is using {config.data_dir}; stop it first, or set "
                    "LIVESTATS_DATA_DIR to another directory",
                    err=True,
                )
                return 2
            port = config.embedded_port if not port_in_use(config.embedded_port) else free_port()
            password = load_or_create_password(config.data_dir)
            server = EmbeddedServer(config.data_dir / "valkey", port, password=password)
            server.start()  # in this (main) thread: see EmbeddedServer.start
            url = server.url
            out.say(
                f"embedded server on 127.0.0.1:{port} (data in {server.data_dir}, append-only file on, "
                f"password in {password_path(config.data_dir)})"
            )
        if not await _layout_usable(url, config, out, own_server=server is not None):
            return EXIT_LAYOUT
        env = {**os.environ, "LIVESTATS_REDIS_URL": url, "LIVESTATS_QUEUE_NAME": config.queue_name}
        # The demo sets the simulator's knobs in its spec: allow them unless the operator said otherwise.
        env.setdefault("LIVESTATS_SPEC_ENV_ALLOW", "FPF_SIM_*")
        worker_log = config.data_dir / "worker.log"
        # Worker metrics on a free port (unless set): several `up`s and tests run side by side.
        metrics_port = os.environ.get("LIVESTATS_METRICS_PORT") or str(free_port())
        worker_env = {**env, "LIVESTATS_METRICS_PORT": metrics_port}
        worker = children.spawn([sys.executable, "-m", "livestats_worker"], worker_log, worker_env)
        out.say(f"worker pid {worker.pid} (log: {worker_log}), metrics at http://127.0.0.1:{metrics_port}/metrics")

        gateway_log = config.data_dir / "gateway.log"
        gateway, gateway_url = _spawn_gateway(config, env, url, gateway_log)
        failure = await children.wait_healthy(gateway, f"{gateway_url}/healthz", _GATEWAY_START_S, stop)
        if failure is not None:
            out.say(f"error: the gateway {failure}; see {gateway_log}", err=True)
            return 1
        if stop.is_set():
            return 0
        out.say(f"gateway on {gateway_url}, API docs at {gateway_url}/docs (log: {gateway_log})")
        if prometheus:
            prometheus_proc = await _start_prometheus(config, gateway_url, metrics_port, stop)
            if prometheus_proc is None:
                return 1
        record, token = await create_local_token(url, LOCAL_PRINCIPAL, config.local_token_ttl_s)
        token_id = record.id
        renewer = asyncio.create_task(keep_renewing(url, record, config.local_token_ttl_s), name="token-renewal")
        renewer.add_done_callback(renewal_stopped)
        # The token goes in the URL's fragment, which browsers never send: no server log sees it.
        out.say(
            f"\ndashboard: open {gateway_url}/login#token={token}   # logs this browser in (local admin)", secret=True
        )
        out.say(f"  curl -H 'Authorization: Bearer {token}' {gateway_url}/api/runs", secret=True)

        if spec is not None:
            outcome = await _run_and_show(url, gateway_url, config, spec, stop, out)
            if exit_after_run or stop.is_set():
                return 0 if outcome in ("succeeded", None) else 1
        out.say("\nstack is up. Submit runs with `livestats submit SPEC.json`; Ctrl-C stops everything.")
        return await _supervise(stop, (worker, "worker", worker_log), (gateway, "gateway", gateway_log))
    except BrokenPipeError:
        out.lost_stdout()  # whoever read our output is gone: stop everything, as for Ctrl-C
        return 0 if stop.is_set() else 1
    finally:
        # In this order: clients are closed while Redis is there, the worker's last events are
        # flushed to a running server, and the server writes its data last.
        out.say("\nstopping...")
        if prometheus_proc is not None:
            await asyncio.to_thread(children.stop, prometheus_proc, "prometheus", 10.0)
        if gateway is not None:
            await asyncio.to_thread(children.stop, gateway, "gateway", _GATEWAY_STOP_S)
            out.say(f"gateway stopped (exit status {gateway.returncode})")
        if renewer is not None:
            renewer.cancel()
        if token_id is not None:
            await revoke_local_token(url, token_id)
            out.say(f"session token {token_id} revoked")
        if worker is not None:
            await asyncio.to_thread(children.stop, worker, "worker", 20.0)
            out.say(f"worker stopped (exit status {worker.returncode})")
        if server is not None:
            await asyncio.to_thread(server.stop)
            out.say("server stopped")
        out.say("stopped.")
        out.close()


async def _supervise(stop: asyncio.Event, *procs: tuple[subprocess.Popen[bytes], str, Path]) -> int:
    """Until `stop` is set (0), or one of the children exits (1, said on stderr)."""
    while not stop.is_set():
        for proc, name, log in procs:
            if proc.poll() is not None:
                print(f"{name} exited with {proc.returncode}; see {log}", file=sys.stderr)
                return 1
        with contextlib.suppress(TimeoutError):  # the timeout is just our check interval
            async with asyncio.timeout(1.0):
                await stop.wait()
    return 0


async def _start_prometheus(
    config: CliConfig, gateway_url: str, metrics_port: str, stop: asyncio.Event
) -> subprocess.Popen[bytes] | None:
    gateway = gateway_url.removeprefix("http://")
    try:
        proc, url = local_prometheus.start(config.data_dir, gateway, f"127.0.0.1:{metrics_port}")
    except local_prometheus.PrometheusNotInstalled as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    log = config.data_dir / "prometheus.log"
    failure = await children.wait_healthy(proc, f"{url}/-/ready", _GATEWAY_START_S, stop)
    if failure is not None:
        print(f"error: prometheus {failure}; see {log}", file=sys.stderr)
        await asyncio.to_thread(children.stop, proc, "prometheus", 10.0)
        return None
    print(f"prometheus on {url} (alerts: {url}/alerts; log: {log})")
    return proc


def _spawn_gateway(config: CliConfig, env: dict[str, str], url: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = config.gateway_port if not port_in_use(config.gateway_port) else free_port()
    if port != config.gateway_port:
        print(f"port {config.gateway_port} is busy; the gateway uses {port} instead")
    gateway_env = {
        **env,
        # Set explicitly: the gateway prefers its own variables to LIVESTATS_REDIS_URL and
        # LIVESTATS_QUEUE_NAME, and it must read the server and queue the worker reads.
        "LIVESTATS_GATEWAY_REDIS_URL": url,
        "LIVESTATS_GATEWAY_QUEUE_NAME": config.queue_name,
        "LIVESTATS_GATEWAY_HOST": "127.0.0.1",
        "LIVESTATS_GATEWAY_PORT": str(port),
        # One process unless the operator asks for more (not one per core): a local stack, one
        # log, one target for --prometheus.
        "LIVESTATS_GATEWAY_PROCESSES": env.get("LIVESTATS_GATEWAY_PROCESSES") or "1",
    }
    proc = children.spawn([sys.executable, "-m", "livestats_gateway"], log, gateway_env)
    return proc, f"http://127.0.0.1:{port}"


async def _layout_usable(url: str, config: CliConfig, out: Console, *, own_server: bool) -> bool:
    """The database's key layout, checked before anything starts on it. `up`'s own embedded
    server holding an older layout is migrated (nothing else runs on it: the data dir is ours);
    another server is the operator's to migrate (`livestats migrate`)."""
    redis = connect(url, "livestats.cli")
    try:
        await layout.ensure(redis)
        return True
    except (layout.LegacyLayout, layout.LayoutMigrating) as exc:
        if not own_server:
            out.say(f"error: {exc}", err=True)
            return False
        out.say(f"the embedded server's data uses an older key layout: migrating it ({exc})")
        migrated = await migrate(redis, config, dry_run=False, force=False, say=out.say)
        return migrated == EXIT_OK
    except layout.LayoutError as exc:
        out.say(f"error: {exc}", err=True)
        return False
    except UNAVAILABLE:
        return True  # the worker and the gateway wait for it, and say so
    finally:
        await redis.aclose()


async def _run_and_show(
    url: str, gateway_url: str, config: CliConfig, spec: RunSpec, stop: asyncio.Event, out: Console
) -> str | None:
    redis = connect(url, "livestats.cli")
    queue_url = queue_server.resolve(url, config.queue_redis_url)
    queue = redis if queue_url == url else connect(queue_url, "livestats.cli.queue")
    try:
        async with Publisher(redis) as publisher:
            run_id = await submit_run(
                redis, publisher, spec, queue=queue, queue_name=config.queue_name, owner=LOCAL_PRINCIPAL
            )
        port = url.rsplit(":", 1)[-1].split("/")[0]
        # The password as REDISCLI_AUTH, read from its file: never on a command line (`ps`).
        auth = f'REDISCLI_AUTH="$(cat {password_path(config.data_dir)})" ' if config.redis_url is None else ""
        stream = f"'{keys.run_events(run_id)}'"
        # Another terminal's CLI uses REDIS_URL if the user set one (then so did we); the embedded
        # server is named with the port it actually got and its password file (never the password).
        cli_auth = (
            f'LIVESTATS_REDIS_URL="redis://:$(cat {password_path(config.data_dir)})@127.0.0.1:{port}/0" '
            if config.redis_url is None
            else ""
        )
        ws_url = gateway_url.replace("http://", "ws://", 1)
        out.say(
            "\n".join(
                (
                    f"\nrun {run_id} ({spec.name}) submitted. Watch it from another terminal too:",
                    f"  {gateway_url}/runs/{run_id}   # its page (after opening the dashboard link above)",
                    f"  {auth}redis-cli -p {port} XRANGE {stream} - +                  # everything so far",
                    f"  {auth}redis-cli -p {port} XREAD BLOCK 0 STREAMS {stream} '$'   # wait for the next event",
                    f"  {cli_auth}.venv/bin/livestats events {run_id} --follow   # a live tail, as NDJSON",
                    f"  {ws_url}/ws/runs/{run_id}   # the same events from the gateway, over WebSocket",
                    "  (the demo succeeds, with retries; for one that fails: make run ARGS=--demo-failing)\n",
                )
            )
        )
        view = ProgressView(run_id)
        watcher = asyncio.create_task(_watch(redis, run_id, view))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({watcher, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not watcher.done():
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            return None
        await watcher
        return view.snapshot().outcome
    finally:
        await redis.aclose()
        if queue is not redis:
            await queue.aclose()


async def _watch(redis: Redis, run_id: str, view: ProgressView) -> None:
    async for event in follow(redis, run_id):
        view.update(event)


_held_locks: list[TextIO] = []  # kept open for the life of the process


def _lock_data_dir(data_dir: Path) -> bool:
    """Two servers appending to one append-only file would corrupt it: one `up` per data dir.
    The lock goes with the process, however it ends."""
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(data_dir / "up.lock", "w")  # noqa: SIM115  (held until exit)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return False
    _held_locks.append(handle)
    return True
