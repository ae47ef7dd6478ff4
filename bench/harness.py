"""The bench's harness: its own topics and keyspace, and running a script on them, measured."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent import futures
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from google.api_core import exceptions as google_exceptions
from google.cloud import pubsub_v1

from ecom_pipeline.admin import SCHEMA, apply_schema, replication_factor_from
from ecom_pipeline.cassandra_io import connect_session
from ecom_pipeline.config import CassandraSettings, PubSubSettings

from .measure import children_cpu, descendants

__all__ = [
    "KEYSPACE",
    "PY",
    "ROOT",
    "Bench",
    "Figures",
    "Plan",
    "Scenario",
    "describe_machine",
    "describe_stack",
    "final_figures",
    "produce",
    "run_process",
]

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
KEYSPACE = "ecom_bench"
Figures = dict[str, float]  # one repeat's measurements by name (bench/report.py's LABELS, RATIOS)


@dataclass(frozen=True)
class Plan:
    """What each repeat measures: the backlog sizes, and the latency run's rate and length."""

    n: int
    baseline_n: int
    latency_rate: int
    latency_seconds: int


class Bench:
    """The bench's private topics, subscriptions and keyspace, and how to run a script on them."""

    def __init__(self) -> None:
        self.suffix = uuid.uuid4().hex[:8]
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()
        self.topics: list[str] = []
        self.env = {**os.environ, "CASSANDRA_KEYSPACE": KEYSPACE}
        self.pubsub = PubSubSettings.from_env(self.env)
        cassandra = CassandraSettings.from_env(self.env)
        apply_schema(cassandra, SCHEMA.read_text(), replication_factor_from(self.env))  # 3 on the local cluster
        self.cluster, self.session = connect_session(cassandra, KEYSPACE)

    def topic(self, name: str) -> str:
        """Create a new `bench-<name>-<suffix>-<k>` and its subscription; return the topic's name."""
        full = f"bench-{name}-{self.suffix}-{len(self.topics)}"
        self.publisher.create_topic(name=self.topic_path(full))
        self.subscriber.create_subscription(
            name=self.subscription_path(full), topic=self.topic_path(full), ack_deadline_seconds=60
        )
        self.topics.append(full)
        return full

    def topic_path(self, topic: str) -> str:
        return self.pubsub.topic_path(topic)

    def subscription_path(self, topic: str) -> str:
        return self.pubsub.subscription_path(f"{topic}-sub")

    def publish(self, topic: str, data: bytes) -> futures.Future[str]:
        future: futures.Future[str] = self.publisher.publish(self.topic_path(topic), data)
        return future

    def truncate(self) -> None:
        self.session.execute("TRUNCATE orders_payments_facts", timeout=120)

    def close(self) -> None:
        for topic in self.topics:
            with suppress(google_exceptions.NotFound):
                self.subscriber.delete_subscription(subscription=self.subscription_path(topic))
            with suppress(google_exceptions.NotFound):
                self.publisher.delete_topic(topic=self.topic_path(topic))
        self.subscriber.close()
        self.cluster.shutdown()


# A scenario of one repeat: the bench, the plan, and the repeat's dead-letter topic; its figures.
Scenario = Callable[[Bench, Plan, str], Figures]


def run_process(argv: list[str], env: dict[str, str]) -> tuple[str, float, float]:
    """Run a script to completion; its output, its peak resident memory in MiB (summed over its
    worker processes, each at its own peak) and the CPU seconds (user + system) it and its
    workers used."""
    cpu_before = children_cpu()
    with tempfile.TemporaryFile() as log_file:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        peaks: dict[int, int] = {}
        while process.poll() is None:
            for pid in descendants(process.pid):
                with suppress(OSError):
                    high_water = re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
                    if high_water:
                        peaks[pid] = max(peaks.get(pid, 0), int(high_water.group(1)))
            time.sleep(0.1)
        log_file.seek(0)
        output = log_file.read().decode(errors="replace")
    peak_kib = sum(peaks.values())
    cpu = children_cpu() - cpu_before  # this child and what it reaped
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[1:3])} failed ({process.returncode}):\n{output[-2000:]}")
    return output, peak_kib / 1024, cpu


def final_figures(output: str) -> dict[str, float]:
    """rate, received, and latency percentiles from a script's `final:` line."""
    line = output.rsplit("final:", 1)[1].splitlines()[0]
    figures = {key: float(value) for key, value in re.findall(r"(\w+)=([\d.]+)", line)}
    return figures


def produce(bench: Bench, script: str, topic: str, count: int, *extra: object, rate: float = 0) -> float:
    """Publish `count` messages with a producer script (seed 7); its publish rate."""
    output, _, _ = run_process(
        [PY, script, "--topic", topic, "--count", str(count), "--rate", str(rate), "--seed", "7", *map(str, extra)],
        bench.env,
    )
    return final_figures(output)["rate"]


def describe_stack(environ: Mapping[str, str]) -> str:
    """The Cassandra the figures were taken on, for the report's first line."""
    nodes = int(environ.get("CASSANDRA_NODES", "1"))
    if nodes == 1:
        return "Cassandra 5.0.9 (one node)"
    factor = environ.get("CASSANDRA_REPLICATION_FACTOR", "1")
    return f"Cassandra 5.0.9 ({nodes} local nodes, replication {factor}, LOCAL_QUORUM)"


def describe_machine() -> str:
    """Cores, CPU model, memory and Python of this machine, for the report and the chart."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    memory = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
    memory_gib = int(memory.group(1)) / 2**20 if memory else 0.0
    return f"{os.cpu_count()} cores ({cpu}), {memory_gib:.0f} GiB, Python {platform.python_version()}"
