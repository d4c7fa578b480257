"""Is the process that claimed a run or a job still alive?

A run or job records who is working on it (`process_token()`); anyone reading it later checks that token with
`is_alive`. The start time guards against a recycled pid: after a reboot or a long time, another program may
have the same pid, and a run must not look "running" because of it.
"""
from __future__ import annotations

import os
import socket


def _start_time(pid: int) -> str | None:
    """The process' start time in clock ticks since boot (Linux /proc), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_token(pid: int | None = None) -> dict:
    """Who is working: this process (or `pid`), on this host."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "host": socket.gethostname(), "pid_start": _start_time(pid)}


def pid_alive(pid: int | None) -> bool:
    """True when a process with this pid exists and is not a zombie (exited, waiting to be reaped)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def is_alive(token: dict | None) -> bool | None:
    """Whether the process of a token still runs: True, False, or None when it cannot be told from here
    (no token, or another host: a shared run store seen from a second machine)."""
    if not token or not token.get("pid"):
        return None
    if token.get("host") and token["host"] != socket.gethostname():
        return None
    if not pid_alive(int(token["pid"])):
        return False
    start = token.get("pid_start")
    return start is None or _start_time(int(token["pid"])) in (None, start)
