"""Scenario, once a run: the sustained rate, the highest steady publish rate the order consumer
(one process) keeps up with for `plan.sustain_seconds` (60 by default).

A step publishes at one rate with `order_data_producer.py --rate` into a topic of its own while
`order_data_consumer.py` consumes it. The rate *held* when all three are true:
- the producer published at it (its own rate at least 97 % of the rate asked: it shares the two
  cores, and a rate it cannot reach would hide the backlog in the producer);
- the end-to-end p99 stayed under 1 s over the whole step: at least 99 % of the messages were
  applied and acked within 1 s of their publish time (the consumer's own
  `ecom_pipeline_end_to_end_seconds` histogram, whose bucket bound at 1 s makes this exact; its
  final line's p99 covers only its last 100,000 messages);
- the backlog stayed bounded: when the producer had published its last message, at most one
  second's worth of messages (the rate x 1 s) were published and not yet applied, which is what a
  consumer whose messages take under a second holds in flight. A consumer slower than the rate by
  d msg/s would hold d x 60 by then, so this catches any deficit over 1/60 of the rate.
A step *stalled*, and did not hold, when the producer wrote no line for STALL seconds: its
progress line comes every 5 s while it publishes, so it was blocked in `publish` with its 20,000
outstanding messages unconfirmed: the emulator stopped confirming (once, at 6,500 msg/s after the
repeats, it then timed out the step's deletion too). The step's processes are stopped, its topic
deleted once the emulator answers again (Bench.drop), and the search goes on below it.
The consumer runs with `--metrics-port` so that the bench can read its counters at that moment
(the per-message histogram and counters are what a deployed consumer runs with).
A step also says how long a Cassandra node was compacting during it, from the node's own log: on
a 2-core machine a compaction of the fact table (5.7-7.0 s in each step of 3405a70's run) takes
the cores the pipeline needs, and the orders published meanwhile came more than 1 s late.

The search (`next_rate`) starts at 0.8 x the order drain's rate (the issue's threshold, so the
first step already answers it), goes up or down by 1.25 x until one rate held and one did not,
then halves the gap between them, for `plan.sustain_steps` steps (4: about 5 minutes at 60 s).
"""

from __future__ import annotations

import logging
import re
import socket
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from prometheus_client.parser import text_string_to_metric_families

from ..harness import PY, Bench, Plan, Stalled, Watched, consumer_argv, final_figures
from ..measure import CONSUMING, NodeLogs, Window, busy_windows, compacting_seconds, logged_at, own_cpu

__all__ = ["Step", "next_rate", "run", "search", "stalled_step"]

log = logging.getLogger(__name__)
IDLE_EXIT = 5  # seconds: longer than the producer's start-up, so the consumer waits for its first message
START, FACTOR, PRECISION, GRAIN = 0.8, 1.25, 1.05, 100  # see next_rate
STALL = 30  # seconds without a line from the producer: 6 of its progress intervals
PUBLISHED = re.compile(r"published=(\d+)")
PRODUCER_RATE = re.compile(r"rate=(\d+)")
NAN = float("nan")


@dataclass(frozen=True)
class Step:
    """One rate tried, and what came of it (see the module's docstring for `held`)."""

    rate: float  # asked of the producer, msg/s
    published_rate: float  # the producer's own, over its run
    within_1s: float  # share of the messages applied and acked within 1 s of publish
    p99_ms: float  # the consumer's final line: its last 100,000 messages
    backlog: float  # published and not yet applied when the producer had published its last
    consumer_cpu10k: float  # the consumer's CPU s / 10k, from its "consuming" line to its last batch
    producer_cpu10k: float  # the producer's CPU s / 10k, from its first progress line to its last
    producer_cores: float  # the same CPU, per second of that span
    compacting_s: float = 0.0  # seconds of the step (consumer ready to last publish) a node spent compacting
    stalled: bool = False  # the producer wrote nothing for STALL seconds; the figures above are NaN but two

    @property
    def held(self) -> bool:
        kept_up = self.published_rate >= 0.97 * self.rate and self.within_1s >= 0.99 and self.backlog <= self.rate
        return kept_up and not self.stalled

    def as_dict(self) -> dict[str, float | bool]:
        return {**asdict(self), "held": self.held}


def next_rate(tried: Sequence[tuple[float, bool]], drain_rate: float) -> float | None:
    """The next rate to try, given the (rate, held) tried so far; None when the search is done.

    First START x the drain rate; then, while no rate has both held and failed above it, FACTOR
    times the highest that held (up) or the lowest that failed (down); then the middle of the
    highest that held and the lowest above it that failed, until they are within PRECISION.
    Rates are whole multiples of GRAIN msg/s; a rate tried before ends the search."""
    if not tried:
        candidate = START * drain_rate
    else:
        held = [rate for rate, ok in tried if ok]
        lowest_held = max(held) if held else 0.0
        failed = [rate for rate, ok in tried if not ok and rate > lowest_held]
        if not held:
            candidate = min(failed) / FACTOR
        elif not failed:
            candidate = lowest_held * FACTOR
        elif min(failed) / lowest_held <= PRECISION:
            return None
        else:
            candidate = (lowest_held + min(failed)) / 2
    rate = max(GRAIN, round(candidate / GRAIN) * GRAIN)
    return None if any(rate == done for done, _ in tried) else float(rate)


def search(attempt: Callable[[float], Step], drain_rate: float, steps: int) -> list[Step]:
    """Up to `steps` attempts, at the rates `next_rate` chooses."""
    done: list[Step] = []
    while len(done) < steps and (rate := next_rate([(s.rate, s.held) for s in done], drain_rate)) is not None:
        done.append(attempt(rate))
        log.info("sustained: %.0f msg/s %s", rate, "held" if done[-1].held else "not held")
    return done


def run(bench: Bench, plan: Plan, dlq: str, drain_rate: float) -> dict[str, object]:
    """The sustained rate (0 if no rate tried held), each step, and the best step's figures."""
    log.info("sustained rate: %d steps of %d s from %.0f msg/s", plan.sustain_steps, plan.sustain_seconds, drain_rate)
    steps = search(lambda rate: attempt(bench, dlq, rate, plan.sustain_seconds), drain_rate, plan.sustain_steps)
    best = max((s for s in steps if s.held), key=lambda s: s.rate, default=None)
    return {
        "seconds": plan.sustain_seconds,
        "drain_rate": drain_rate,
        "rate": best.rate if best else 0.0,
        "best": best.as_dict() if best else None,
        "steps": [s.as_dict() for s in steps],
    }


def attempt(bench: Bench, dlq: str, rate: float, seconds: int) -> Step:
    """One step: the consumer started and ready, then `rate` x `seconds` orders published at `rate`.
    Whatever happens, the step's processes are gone and its topic deleted when it returns: a failed
    step leaves most of its messages behind, and the emulator holds every one of them in memory."""
    topic = bench.topic("sustain")
    running: list[Watched] = []
    try:
        return measure(bench, dlq, topic, rate, seconds, running)
    finally:
        for watched in running:
            if watched.process.poll() is None:  # a step that failed part-way: our own child
                watched.process.kill()
                watched.process.wait(30)
        bench.drop(topic)


def measure(bench: Bench, dlq: str, topic: str, rate: float, seconds: int, running: list[Watched]) -> Step:
    """The step itself; each process it starts is appended to `running`."""
    port, count = free_port(), round(rate * seconds)
    node_logs = NodeLogs()
    consumer = Watched(
        consumer_argv("order_data_consumer.py", topic, dlq, IDLE_EXIT, "--metrics-port", port), bench.env
    )
    running.append(consumer)
    started = logged_at(*consumer.wait_for_line(CONSUMING.pattern, timeout=120), consumer.wall_minus_monotonic)
    producer = Watched(
        [PY, "order_data_producer.py", "--topic", topic, "--count", str(count), "--rate", str(rate), "--seed", "7"],
        bench.env,
    )
    running.append(producer)
    # The producer's final line comes once its last message is published and confirmed, before
    # its clients close and it exits: the moment to read how many are still outstanding.
    try:
        published = logged_at(
            *producer.wait_for_line(r"final: ", timeout=3 * seconds + 120, quiet=STALL), producer.wall_minus_monotonic
        )
    except Stalled:
        log.warning("sustained: the producer wrote nothing for %d s at %.0f msg/s: stalled", STALL, rate)
        return stalled_step(rate, count, producer.lines, scrape(port)["applied"])
    backlog = count - scrape(port)["applied"]
    producer.wait(timeout=60)
    if backlog <= rate:  # held so far: let it finish, for the latencies of every message
        deadline = time.monotonic() + 60
        while scrape(port)["applied"] < count and time.monotonic() < deadline:
            time.sleep(0.5)
    metrics = scrape(port)
    windows: dict[str, Window] = {}
    if backlog > rate:  # failed already: no need to wait for a long backlog; it worked until stopped
        windows[""] = (started, time.monotonic())
        consumer.process.terminate()
    consumer.wait(timeout=300)
    final = final_figures(consumer.output)
    windows = windows or busy_windows(consumer.lines, IDLE_EXIT, consumer.wall_minus_monotonic)
    own, _ = own_cpu(consumer.sampler.timeline, consumer.sampler.tags(), windows)
    producer_cpu, producer_seconds, published_count = producer_window(producer)
    to_wall = consumer.wall_minus_monotonic
    return Step(
        rate=rate,
        published_rate=final_figures(producer.output)["rate"],
        within_1s=metrics["within_1s"] / max(1.0, metrics["observed"]),
        p99_ms=final.get("p99", NAN),
        backlog=float(backlog),
        consumer_cpu10k=own / max(1.0, final["applied"]) * 10_000,
        producer_cpu10k=producer_cpu / max(1, published_count) * 10_000,
        producer_cores=producer_cpu / producer_seconds if producer_seconds > 0 else float("nan"),
        compacting_s=compacting_seconds(node_logs.since(), (started + to_wall, published + to_wall)),
    )


def stalled_step(rate: float, count: int, lines: Sequence[tuple[float, str]], applied: float) -> Step:
    """A step whose producer stalled: the rate its last progress line gave (0 without one), and
    what was not applied of the step's `count`; the rest is not measured."""
    rates = [float(m.group(1)) for _, text in lines if PUBLISHED.search(text) and (m := PRODUCER_RATE.search(text))]
    unmeasured = dict.fromkeys(
        ("within_1s", "p99_ms", "consumer_cpu10k", "producer_cpu10k", "producer_cores", "compacting_s"), NAN
    )
    return Step(
        rate=rate, published_rate=rates[-1] if rates else 0.0, backlog=count - applied, stalled=True, **unmeasured
    )


def producer_window(producer: Watched) -> tuple[float, float, int]:
    """The producer's CPU seconds, the seconds and the messages published from its first progress
    line to its final one: its start-up (imports, client) left out, as the consumer's is."""
    counts = [
        (logged_at(at, text, producer.wall_minus_monotonic), int(m.group(1)))
        for at, text in producer.lines
        if (m := PUBLISHED.search(text))
    ]
    if len(counts) < 2:  # a step shorter than the producer's 5 s progress interval: its whole run
        samples = producer.sampler.timeline.samples
        counts = [(samples[0][0], 0), (samples[-1][0], counts[-1][1] if counts else 0)]
    (start, first), (end, last) = counts[0], counts[-1]
    cpu = sum(producer.sampler.timeline.between(part, (start, end)) for part in producer.sampler.timeline.parts())
    return cpu, end - start, last - first


def scrape(port: int) -> dict[str, float]:
    """The consumer's `applied` count, and how many latencies it observed, `within_1s` of them."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = {"applied": 0.0, "observed": 0.0, "within_1s": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "ecom_pipeline_messages_total" and sample.labels.get("outcome") == "applied":
                found["applied"] += sample.value
            elif sample.name == "ecom_pipeline_end_to_end_seconds_count":
                found["observed"] += sample.value
            elif sample.name == "ecom_pipeline_end_to_end_seconds_bucket" and float(sample.labels["le"]) == 1.0:
                found["within_1s"] += sample.value
    return found


def free_port() -> int:
    """A local port nothing listens on now (for the consumer's metrics endpoint)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
