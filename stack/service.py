"""A process of the local stack that this project started: its pid file, whether it is still ours,
and starting, waiting for and stopping it."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .common import ROOT, Endpoints, is_loopback

__all__ = ["LocalService", "ensure", "group_alive"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalService:
    """A service this project starts: its pid file, its log, and how long it may take to answer."""

    name: str
    pid_file: Path
    log_file: Path
    cmdline_marker: str  # a word in the process's command line, guards against a recycled pid
    start_timeout: float

    def pid(self) -> int | None:
        """The recorded pid if that process is alive and is still ours, else None: its command
        line has the marker, it runs in this checkout (another checkout's node has the same
        marker, and a stale pid file may name it), and it leads its process group, as `spawn`
        made it do."""
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            cwd = Path(f"/proc/{pid}/cwd").resolve(strict=True)
            leads = os.getpgid(pid) == pid
        except (OSError, ValueError):
            return None
        return pid if self.cmdline_marker in cmdline and cwd.is_relative_to(ROOT) and leads else None

    def spawn(self, argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> int:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as out:
            # A new session makes the service the leader of its own process group, so `down`
            # can stop it and every child it forks (gcloud leaves a java child behind otherwise).
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        self.pid_file.write_text(f"{process.pid}\n")
        return process.pid

    def stop(self, grace: float = 30.0) -> None:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return
        log.info("stopping %s (process group %s)", self.name, pid)
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and group_alive(pid):
            time.sleep(0.3)
        if group_alive(pid):
            log.warning("%s did not stop within %.0f s, killing it", self.name, grace)
            os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def group_alive(pgid: int) -> bool:
    """Whether any process of this process group is still running (a zombie is not)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # A zombie leader still counts for killpg; look at its state.
    try:
        state = Path(f"/proc/{pgid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z" or _other_members(pgid)
    except OSError:
        return _other_members(pgid)


def _other_members(pgid: int) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().split(")")[-1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def ensure(
    service: LocalService,
    host: str,
    answers: Callable[[], object],
    start: Callable[[Endpoints], int],
    endpoints: Endpoints,
) -> None:
    """Reuse the service if it answers, wait for it if ours is starting, else start it."""
    if answers():
        pid = service.pid()
        if pid is None:
            log.info("%s answers on %s, reusing it", service.name, host)
        else:
            log.info("%s is ready (pid %s, started by this project)", service.name, pid)
        return
    if not is_loopback(host):
        raise SystemExit(f"{service.name} at {host} does not answer, and it is not a local address to start it on")
    pid = service.pid()
    if pid is None:
        pid = start(endpoints)
        log.info("started %s (pid %s), log in %s", service.name, pid, service.log_file.relative_to(ROOT))
    else:
        log.info("%s (pid %s) is starting, waiting for it", service.name, pid)
    deadline = time.monotonic() + service.start_timeout
    restarted = False
    while time.monotonic() < deadline:
        # By process group, not service.pid(): just after the fork the child's command line
        # is still Python's, before it execs java.
        if not group_alive(pid):
            if restarted:
                raise SystemExit(f"{service.name} exited during start-up; last lines of its log:\n{service.log_tail()}")
            # Once: a joining node can miss its seed on two busy cores, and then just exits.
            log.warning("%s exited during start-up; starting it once more", service.name)
            pid, restarted = start(endpoints), True
            continue
        if answers():
            log.info("%s is ready", service.name)
            return
        time.sleep(1.0)
    raise SystemExit(
        f"{service.name} did not answer within {service.start_timeout:.0f} s; "
        f"last lines of its log:\n{service.log_tail()}"
    )
