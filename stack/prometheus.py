"""Prometheus for `make observe`: started on 127.0.0.1:9090 with monitoring/prometheus.yml; does it answer?"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request

from .common import ROOT, STACK_DIR, Endpoints
from .service import LocalService, ensure

__all__ = ["PROMETHEUS", "PROMETHEUS_ADDRESS", "observe", "prometheus_answers", "start_prometheus"]

PROMETHEUS = LocalService(
    "prometheus",
    STACK_DIR / "prometheus.pid",
    STACK_DIR / "prometheus" / "prometheus.log",
    "monitoring/prometheus.yml",
    start_timeout=60.0,
)
PROMETHEUS_ADDRESS = "127.0.0.1:9090"


def prometheus_answers(timeout: float = 3.0) -> bool:
    """True if a Prometheus answers its readiness endpoint on PROMETHEUS_ADDRESS."""
    try:
        with urllib.request.urlopen(f"http://{PROMETHEUS_ADDRESS}/-/ready", timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_prometheus(endpoints: Endpoints) -> int:
    binary = shutil.which("prometheus")
    if binary is None:
        raise SystemExit("Prometheus is not installed: `apt-get install prometheus` (Debian's package)")
    data = STACK_DIR / "prometheus" / "data"
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        binary,
        f"--config.file={ROOT / 'monitoring' / 'prometheus.yml'}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address={PROMETHEUS_ADDRESS}",
        "--storage.tsdb.retention.time=2d",
    ]
    return PROMETHEUS.spawn(argv, cwd=ROOT)


def observe(endpoints: Endpoints) -> None:
    """Start (or reuse) Prometheus with monitoring/prometheus.yml."""
    STACK_DIR.mkdir(exist_ok=True)
    ensure(PROMETHEUS, "127.0.0.1", prometheus_answers, start_prometheus, endpoints)
