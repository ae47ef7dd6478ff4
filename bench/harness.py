"""The bench's harness: its own topics and keyspace, and running a script on them, measured."""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.api_core import exceptions as google_exceptions
from google.cloud import pubsub_v1

from ecom_pipeline.admin import SCHEMA, apply_schema, patience, replication_factor_from
from ecom_pipeline.cassandra_io import connect_session
from ecom_pipeline.config import CassandraSettings, PubSubSettings

from .measure import Sampler, StackCpu, children_cpu

__all__ = [
    "KEYSPACE",
    "PY",
    "ROOT",
    "Bench",
    "Figures",
    "Plan",
    "Scenario",
    "Stalled",
    "Watched",
    "consumer_argv",
    "describe_machine",
    "describe_stack",
    "final_figures",
    "last_json",
    "produce",
    "run_process",
]

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
KEYSPACE = "ecom_bench"
log = logging.getLogger(__name__)
DROP_WAIT = 300  # seconds a deletion asks an emulator that does not answer again (see Bench.drop)
Figures = dict[str, float]  # one repeat's measurements by name (bench/report.py's LABELS, RATIOS)


@dataclass(frozen=True)
class Plan:
    """What each repeat measures: the backlog sizes, and the latency run's rate and length; and
    what the sustained-rate search (once a run) may spend: seconds a step, and steps."""

    n: int
    baseline_n: int
    latency_rate: int
    latency_seconds: int
    sustain_seconds: int = 60
    sustain_steps: int = 4


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

    def drop(self, topic: str) -> None:
        """Delete a topic and its subscription now: the emulator keeps every message the
        subscription has had in its memory (see drop_all), and a large heap slows it for every
        later step. An emulator that does not answer in time (one that stalled under a step's
        load) is asked again for up to DROP_WAIT seconds (`patience`, as set-up does), so the
        next step starts on an emulator that answers again. A failed deletion is logged, never
        raised: it costs no figure."""
        if topic in self.topics:
            self.topics.remove(topic)
        for delete, path in (
            (self.subscriber.delete_subscription, {"subscription": self.subscription_path(topic)}),
            (self.publisher.delete_topic, {"topic": self.topic_path(topic)}),
        ):
            try:
                delete(**path, **patience(DROP_WAIT))
            except google_exceptions.NotFound:
                pass
            except google_exceptions.GoogleAPICallError as exc:
                log.warning("could not delete %s: %s", next(iter(path.values())), exc)

    def drop_all(self) -> None:
        """Delete every topic made so far. The emulator keeps every message a subscription has had,
        acked or not, until the subscription is deleted (42 MiB of its heap per 50,000 orders,
        measured): a run that kept its repeats' topics filled the emulator's 1 GiB, and its last
        repeat and the sustained search were measured on an emulator in full collections."""
        for topic in list(self.topics):
            self.drop(topic)

    def close(self) -> None:
        self.drop_all()
        self.subscriber.close()
        self.cluster.shutdown()


# A scenario of one repeat: the bench, the plan, and the repeat's dead-letter topic; its figures.
Scenario = Callable[[Bench, Plan, str], Figures]


class Stalled(RuntimeError):
    """A watched script wrote no line for longer than it may (a producer blocked in publish)."""


class Watched:
    """A script started on the bench's stack and watched: its output lines stamped with the
    monotonic time they came, its processes' CPU (and, with `stack`, the node(s)' and the
    emulator's) sampled every 0.1 s and at each line, and its peak memory. Several can run at once."""

    def __init__(self, argv: list[str], env: dict[str, str], stack: StackCpu | None = None) -> None:
        self.argv = argv
        self.cpu_before = children_cpu()
        self.process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
        self.sampler = Sampler(self.process.pid, stack)
        self.wall_minus_monotonic = time.time() - time.monotonic()  # to place its log lines' own stamps
        self.lines: list[tuple[float, str]] = []
        self._line_came = threading.Condition()
        self._threads = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._poll, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None  # a pipe, as opened
        for line in self.process.stdout:
            at = time.monotonic()
            self.sampler.sample()  # the CPU at the moment a line marks (start-up over, say)
            with self._line_came:
                self.lines.append((at, line.rstrip("\n")))
                self._line_came.notify_all()

    def _poll(self) -> None:
        while self.process.poll() is None:
            self.sampler.sample(memory=True)
            time.sleep(0.1)

    def wait_for_line(self, pattern: str, timeout: float, quiet: float | None = None) -> tuple[float, str]:
        """The first line matching the regular expression `pattern`, with its arrival time;
        `Stalled` if, with `quiet`, the script wrote no line at all for that many seconds."""
        since = time.monotonic()
        deadline = since + timeout
        with self._line_came:
            while True:
                found = next(((at, text) for at, text in self.lines if re.search(pattern, text)), None)
                if found is not None:
                    return found
                now = time.monotonic()
                if quiet is not None and now - (self.lines[-1][0] if self.lines else since) > quiet:
                    raise Stalled(f"{' '.join(self.argv[1:3])}: no output for {quiet:g} s:\n{self.output[-2000:]}")
                if self.process.poll() is not None or now > deadline:
                    raise RuntimeError(f"{' '.join(self.argv[1:3])}: no line /{pattern}/:\n{self.output[-2000:]}")
                self._line_came.wait(0.2)

    def wait(self, timeout: float) -> None:
        """Wait for the script's exit (and its last lines); raise if it failed."""
        self.process.wait(timeout)
        for thread in self._threads:
            thread.join()
        if self.process.returncode != 0:
            raise RuntimeError(f"{' '.join(self.argv[1:3])} failed ({self.process.returncode}):\n{self.output[-2000:]}")

    @property
    def output(self) -> str:
        return "\n".join(text for _, text in self.lines)

    @property
    def rss_mib(self) -> float:
        """Peak resident memory, summed over its processes (each at its own peak)."""
        return sum(self.sampler.peaks_kib.values()) / 1024

    @property
    def cpu(self) -> float:
        """CPU seconds (user + system) of the whole run, its workers included: what the children
        reaped since it started used, so only when no other child of the bench ended meanwhile."""
        return children_cpu() - self.cpu_before


def run_process(argv: list[str], env: dict[str, str]) -> tuple[str, float, float]:
    """Run a script to completion; its output, its peak resident memory in MiB (summed over its
    worker processes, each at its own peak) and the CPU seconds (user + system) it and its
    workers used."""
    watched = Watched(argv, env)
    watched.wait(timeout=3600)
    return watched.output, watched.rss_mib, watched.cpu


def consumer_argv(script: str, topic: str, dlq: str, idle_exit: float, *extra: object) -> list[str]:
    """A consumer script on the topic's subscription, exiting once nothing came for `idle_exit` s."""
    subscription = f"{topic}-sub"
    return [
        PY,
        script,
        "--subscription",
        subscription,
        "--dead-letter-topic",
        dlq,
        "--exit-after-idle",
        str(idle_exit),
    ] + [str(flag) for flag in extra]


def last_json(output: str) -> dict[str, Any]:
    """The last line of a script's output that is a JSON object: what the bench's own helper
    scripts print as they finish (a library may still log a line after it, on the same pipe)."""
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            found: dict[str, Any] = json.loads(line)
            return found
    raise RuntimeError(f"no JSON line in the output:\n{output[-2000:]}")


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
