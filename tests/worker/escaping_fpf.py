"""A stand-in FPF whose helpers try every way out of the call's process group.

    python escaping_fpf.py PID_DIR PROMPT_FILE

It starts three helpers, each writing its pid to PID_DIR/<kind>.pid and then sleeping:
`setsid` (a new session, still holding our stdout and stderr), `daemon` (a double fork with
setsid in between, stdio on /dev/null, re-parented away from us) and `pgroup` (a process group
of its own in our session). Once all three have written their pids, FPF_SIM_BEHAVIOUR decides:
`exit` answers and exits 0, `hang` sleeps until killed, `env` also writes its environment to
PID_DIR/env.json and answers, `leak` prints FPF_UPSTREAM_KEY to stdout and stderr and exits 1,
`leak_stdout` prints it to stdout (not JSON) and exits 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

SLEEPER = (
    "import os, sys, time\n"
    "path = os.path.join(sys.argv[1], sys.argv[2] + '.pid')\n"
    "with open(path + '.tmp', 'w') as f: f.write(str(os.getpid()))\n"
    "os.rename(path + '.tmp', path)\n"
    "time.sleep(1000)\n"
)
KINDS = ("setsid", "daemon", "pgroup")


def sleeper(pid_dir: str, kind: str) -> list[str]:
    return [sys.executable, "-c", SLEEPER, pid_dir, kind]


def daemonise(pid_dir: str) -> None:
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.execv(sys.executable, sleeper(pid_dir, "daemon"))
        os._exit(0)
    os.wait()  # the middle process exits at once: the daemon is re-parented away from us


def main() -> int:
    pid_dir = sys.argv[1]
    subprocess.Popen(sleeper(pid_dir, "setsid"), start_new_session=True)
    subprocess.Popen(sleeper(pid_dir, "pgroup"), process_group=0)
    daemonise(pid_dir)
    while not all(os.path.exists(os.path.join(pid_dir, f"{kind}.pid")) for kind in KINDS):
        time.sleep(0.01)
    behaviour = os.environ.get("FPF_SIM_BEHAVIOUR", "exit")
    if behaviour == "hang":
        time.sleep(1000)
    if behaviour == "env":
        with open(os.path.join(pid_dir, "env.json"), "w") as f:
            json.dump(dict(os.environ), f)
    if behaviour in ("leak", "leak_stdout"):
        secret = os.environ.get("FPF_UPSTREAM_KEY", "")
        print(f"calling upstream with key {secret} failed", flush=True)
        if behaviour == "leak_stdout":
            return 0
        print(f"error: upstream refused key={secret}", file=sys.stderr, flush=True)
        return 1
    print(json.dumps({"answer": 42, "usage": {"input_tokens": 3, "output_tokens": 5}}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
