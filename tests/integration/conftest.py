"""Fixtures for tests against the real Cassandra 5 and the official Pub/Sub emulator.

The session starts the local stack (or reuses it) once, and waits for real readiness. Every
test gets its own uuid-named topics and subscriptions and its own order-id range, so tests
never see each other's messages or rows; the scripts run as real processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, Session
from cassandra.policies import ConstantReconnectionPolicy, RoundRobinPolicy
from google.api_core import exceptions as google_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import pubsub_v1
from google.pubsub_v1.services.publisher import PublisherClient as GapicPublisher

from ecom_pipeline.admin import SubscriptionSpec, ensure_subscriptions, ensure_topics
from ecom_pipeline.config import PubSubSettings

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
STACK_DEFAULTS = {
    "GOOGLE_CLOUD_PROJECT": "ecom-local",
    "PUBSUB_EMULATOR_HOST": "127.0.0.1:8085",
    "CASSANDRA_HOSTS": "127.0.0.1",
    "CASSANDRA_PORT": "9042",
    "CASSANDRA_KEYSPACE": "ecom_store",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.25) -> object:
    """Poll `predicate` until it returns something truthy; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    """The environment of the local stack, started (or reused) and ready."""
    env = {**os.environ}
    for key, value in STACK_DEFAULTS.items():
        env.setdefault(key, value)
    subprocess.run([PYTHON, str(ROOT / "stack" / "localstack.py"), "up"], env=env, check=True, timeout=400)
    subprocess.run([PYTHON, "-m", "ecom_pipeline.admin", "setup"], env=env, cwd=ROOT, check=True, timeout=300)
    os.environ.update({k: env[k] for k in STACK_DEFAULTS})  # for the in-process clients below
    return env


@pytest.fixture(scope="session")
def cql(stack_env: dict[str, str]) -> Iterator[Session]:
    cluster = Cluster(
        [host.strip() for host in stack_env["CASSANDRA_HOSTS"].split(",")],
        port=int(stack_env["CASSANDRA_PORT"]),
        protocol_version=5,
        execution_profiles={EXEC_PROFILE_DEFAULT: ExecutionProfile(load_balancing_policy=RoundRobinPolicy())},
        reconnection_policy=ConstantReconnectionPolicy(1.0, max_attempts=None),
    )
    session = cluster.connect(stack_env["CASSANDRA_KEYSPACE"])
    yield session
    cluster.shutdown()


@dataclass
class Topics:
    """A private set of the pipeline's topics and subscriptions for one test."""

    settings: PubSubSettings
    suffix: str
    publisher: pubsub_v1.PublisherClient = field(default_factory=pubsub_v1.PublisherClient)
    subscriber: pubsub_v1.SubscriberClient = field(default_factory=pubsub_v1.SubscriberClient)
    raw_publisher: GapicPublisher = field(
        default_factory=lambda: GapicPublisher(
            credentials=AnonymousCredentials(), client_options={"api_endpoint": os.environ["PUBSUB_EMULATOR_HOST"]}
        )
    )

    def name(self, topic: str) -> str:
        return f"{topic}-{self.suffix}"

    def sub(self, topic: str) -> str:
        return f"{self.name(topic)}-sub"

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str] | None = None) -> str:
        """Publish one message with these attributes, whatever their names (through the raw
        Publish call: the batching client's keywords `topic`, `data`, `ordering_key`, ... would
        collide with attributes of the same name)."""
        message = pubsub_v1.types.PubsubMessage(data=data, attributes=dict(attributes or {}))
        response = self.raw_publisher.publish(
            topic=self.settings.topic_path(self.name(topic)), messages=[message], timeout=30
        )
        return response.message_ids[0]

    def publish_json(self, topic: str, records: list[dict[str, object]]) -> None:
        futures = [
            self.publisher.publish(self.settings.topic_path(self.name(topic)), json.dumps(r).encode()) for r in records
        ]
        for future in futures:
            future.result(timeout=60)

    def drain(self, topic: str, expected: int, timeout: float = 60.0) -> list[pubsub_v1.types.ReceivedMessage]:
        """Pull and ack messages of `topic`'s subscription until `expected` have arrived."""
        path = self.settings.subscription_path(self.sub(topic))
        received: list[pubsub_v1.types.ReceivedMessage] = []

        def pull_some() -> bool:
            response = self.subscriber.pull(subscription=path, max_messages=1000, timeout=10)
            if response.received_messages:
                received.extend(response.received_messages)
                self.subscriber.acknowledge(subscription=path, ack_ids=[m.ack_id for m in response.received_messages])
            return len(received) >= expected

        wait_for(pull_some, timeout, f"{expected} messages on {self.sub(topic)} (got {len(received)})", interval=0)
        return received

    def is_empty(self, topic: str) -> bool:
        """True when nothing can be pulled from `topic`'s subscription now (what is seen is handed back)."""
        path = self.settings.subscription_path(self.sub(topic))
        response = self.subscriber.pull(subscription=path, max_messages=100, timeout=5)
        if response.received_messages:
            self.subscriber.modify_ack_deadline(
                subscription=path, ack_ids=[m.ack_id for m in response.received_messages], ack_deadline_seconds=0
            )
        return not response.received_messages


@pytest.fixture
def topics(stack_env: dict[str, str]) -> Iterator[Topics]:
    """The four topics and their subscriptions under uuid names, with the design's policies.

    Their ack deadline is 10 s and the retry backoff 1 s, so redelivery tests stay short.
    """
    settings = PubSubSettings.from_env(stack_env)
    created = Topics(settings, uuid.uuid4().hex[:10])
    names = {t: created.name(t) for t in ("orders_data", "payments_data", "dlq_orders_data", "dlq_payments_data")}
    ensure_topics(settings, list(names.values()))
    ensure_subscriptions(
        settings,
        [
            SubscriptionSpec(
                names["orders_data"], names["dlq_orders_data"], ack_deadline=10, minimum_backoff=1, maximum_backoff=2
            ),
            SubscriptionSpec(
                names["payments_data"],
                names["dlq_payments_data"],
                ack_deadline=10,
                minimum_backoff=1,
                maximum_backoff=2,
            ),
            SubscriptionSpec(names["dlq_orders_data"], ack_deadline=10),
            SubscriptionSpec(names["dlq_payments_data"], ack_deadline=10),
        ],
    )
    yield created
    for name in names.values():
        with contextlib.suppress(google_exceptions.NotFound):
            created.subscriber.delete_subscription(subscription=settings.subscription_path(f"{name}-sub"))
        with contextlib.suppress(google_exceptions.NotFound):
            created.publisher.delete_topic(topic=settings.topic_path(name))
    created.subscriber.close()


@pytest.fixture
def first_id() -> int:
    """The start of this test's own order-id range (10 million ids, far from the demo's)."""
    return 10**13 + random.randrange(10**5) * 10**7


@dataclass
class Script:
    """A pipeline script running as a real process, its output in a log file."""

    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"{self.log.name} did not exit within {timeout:.0f} s:\n{self.output()[-3000:]}"
            ) from None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)


@pytest.fixture
def run_script(stack_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Script]]:
    """Start a top-level script; every script still running at the end of the test is killed."""
    started: list[Script] = []

    def start(
        script: str,
        *args: object,
        env: dict[str, str] | None = None,
        new_session: bool = False,
        wrap: tuple[str, ...] = (),
    ) -> Script:
        """`script` is a top-level script's file name, or `-m` followed by a module and its arguments.
        `new_session`: in a process group of its own, as a terminal's foreground job is.
        `wrap`: a command that runs the script (e.g. `faketime -f -120s`)."""
        target = [] if script == "-m" else [str(ROOT / script)]
        log = tmp_path / f"{Path(script).stem or 'module'}-{len(started)}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [*wrap, PYTHON, *([script] if script == "-m" else target), *map(str, args)],
                cwd=ROOT,
                env={**stack_env, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=new_session,
            )
        started.append(Script(process, log))
        return started[-1]

    yield start
    for script in started:
        if script.process.poll() is None:
            script.process.kill()
            script.process.wait()


def no_google_credentials(tmp_path: Path) -> dict[str, str]:
    """An environment for real Pub/Sub with no credentials anywhere: no emulator, an empty home
    and gcloud configuration, no key file, and no metadata server asked."""
    home = tmp_path / "home"
    home.mkdir()
    return {
        "PUBSUB_EMULATOR_HOST": "",
        "HOME": str(home),
        "CLOUDSDK_CONFIG": str(home / "gcloud"),
        "GOOGLE_APPLICATION_CREDENTIALS": "",
        "NO_GCE_CHECK": "True",
    }


def summary_counts(line: str) -> dict[str, int]:
    """Every `name=<integer>` of a summary line, parsed: `applied=12` is 12, never a prefix of it."""
    counts: dict[str, int] = {}
    for name, value in re.findall(r"(?<![\w])([a-z_]+)=(\d+)(?![\d.])", line):
        counts.setdefault(name, int(value))
    return counts


def final_counts(output: str, prefix: str = "final: ") -> dict[str, int]:
    """The counts of a script's last `final:` line (for `--workers`: `final: 2 workers: `)."""
    return summary_counts(output.rsplit(prefix, 1)[1].splitlines()[0])


def applied_so_far(output: str) -> int:
    """`applied=` of a consumer's last progress line (`--stats-interval`); 0 before its first."""
    lines = [line for line in output.splitlines() if " applied=" in line]
    return summary_counts(lines[-1])["applied"] if lines else 0


def consumer_args(topics: Topics, source: str, dead_letter: str, *extra: object) -> list[object]:
    return ["--subscription", topics.sub(source), "--dead-letter-topic", topics.name(dead_letter), *extra]
