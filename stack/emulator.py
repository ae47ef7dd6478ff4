"""Google's Pub/Sub emulator in the local stack: found through gcloud, started, and asked whether it answers."""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from .common import STACK_DIR, Endpoints, is_loopback
from .service import LocalService, ensure

__all__ = ["PUBSUB", "emulator_answers", "emulator_launcher", "ensure_emulator", "start_early", "start_pubsub"]

PUBSUB = LocalService(
    "pubsub-emulator",
    STACK_DIR / "pubsub.pid",
    STACK_DIR / "pubsub" / "emulator.log",
    "pubsub-emulator",
    start_timeout=90.0,
)


def emulator_answers(endpoints: Endpoints, timeout: float = 3.0) -> bool:
    """True if the Pub/Sub emulator answers a REST call (list topics)."""
    url = f"http://{endpoints.pubsub_host}:{endpoints.pubsub_port}/v1/projects/{endpoints.project}/topics"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def emulator_launcher() -> Path:
    try:
        sdk_root = subprocess.run(
            ["gcloud", "info", "--format=value(installation.sdk_root)"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"the Google Cloud CLI (gcloud) is needed for the Pub/Sub emulator: {exc}") from exc
    launcher = Path(sdk_root) / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
    if not launcher.exists():
        raise SystemExit(
            f"the Pub/Sub emulator is not installed ({launcher} is missing): "
            "`gcloud components install pubsub-emulator` or the google-cloud-cli-pubsub-emulator package"
        )
    return launcher


def start_pubsub(endpoints: Endpoints) -> int:
    argv = [str(emulator_launcher()), f"--host={endpoints.pubsub_host}", f"--port={endpoints.pubsub_port}"]
    env = dict(os.environ, JAVA_OPTS="-Xms128m -Xmx1g")
    return PUBSUB.spawn(argv, cwd=STACK_DIR, env=env)


def start_early(endpoints: Endpoints) -> None:
    """Start the emulator without waiting for it, if it is local, not answering and not ours already."""
    if not emulator_answers(endpoints) and is_loopback(endpoints.pubsub_host) and PUBSUB.pid() is None:
        start_pubsub(endpoints)


def ensure_emulator(endpoints: Endpoints) -> None:
    """The emulator answering: reused, waited for, or started."""
    ensure(PUBSUB, endpoints.pubsub_host, lambda: emulator_answers(endpoints), start_pubsub, endpoints)
