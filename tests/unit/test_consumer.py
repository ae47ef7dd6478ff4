"""The consumer loop, the lease keeper and the prefetcher, with small fakes of the two Pub/Sub clients.

`FakeSubscription` and `FakeDeadLetters` stand in for `SubscriptionClient` and
`SyncPublisher` (our adapters, not Google's classes); the real services are exercised by
the integration tests. Handlers are scripted: each call returns the next list of outcomes.
"""

from __future__ import annotations

import gc
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import pytest

from ecom_pipeline.config import ConsumerSettings
from ecom_pipeline.consumer import Consumer, LeaseKeeper, Prefetcher, last_chance, sort_outcomes
from ecom_pipeline.errors import FatalError
from ecom_pipeline.handlers import Handler
from ecom_pipeline.policy import Applied, DeadLetter, Defer, Fail, Outcome, Retry
from ecom_pipeline.pubsub_io import PartlyPublished, PubSubUnavailable, Received
from tests.unit.conftest import received


@dataclass
class FakeSubscription:
    """Records every ack, lease change and pull; serves `to_pull` once, then nothing."""

    to_pull: list[Received] = field(default_factory=list)
    name: str = "orders_data-sub"
    path: str = "projects/p/subscriptions/orders_data-sub"
    acked: list[str] = field(default_factory=list)
    deadlines: list[tuple[tuple[str, ...], int]] = field(default_factory=list)
    on_modify: Callable[[], None] = lambda: None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pull(self, max_messages: int, timeout: float) -> list[Received]:
        with self.lock:
            batch, self.to_pull = self.to_pull[:max_messages], self.to_pull[max_messages:]
        if not batch:
            threading.Event().wait(min(timeout, 0.01))
        return batch

    def ack(self, ack_ids: Sequence[str]) -> None:
        with self.lock:
            self.acked.extend(ack_ids)

    def modify_deadline(self, ack_ids: Sequence[str], seconds: int) -> None:
        self.on_modify()
        with self.lock:
            self.deadlines.append((tuple(ack_ids), seconds))

    def nack(self, ack_ids: Sequence[str]) -> None:
        self.modify_deadline(ack_ids, 0)

    def nacked(self) -> list[str]:
        return [ack_id for ids, seconds in self.deadlines if seconds == 0 for ack_id in ids]

    def set_to(self, seconds: int) -> list[str]:
        return [ack_id for ids, s in self.deadlines if s == seconds for ack_id in ids]


@dataclass
class FakeDeadLetters:
    """Records what was published; each call takes the next scripted result (default: all accepted)."""

    results: list[object] = field(default_factory=list)
    published: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    topic_path: str = "projects/p/topics/dlq_orders_data"

    def publish(self, messages: Sequence[tuple[bytes, Mapping[str, str]]]) -> list[str | None]:
        result = self.results.pop(0) if self.results else None
        if isinstance(result, BaseException):
            raise result
        self.published.extend((data, dict(attributes)) for data, attributes in messages)
        return list(result) if isinstance(result, list) else [None] * len(messages)


class ScriptedHandler:
    """Returns the scripted outcomes of each call in turn (then: every message applied)."""

    def __init__(self, *calls: list[Outcome] | BaseException, on_call: Callable[[], None] = lambda: None) -> None:
        self.calls = list(calls)
        self.batches: list[list[str]] = []
        self.on_call = on_call

    def handle(self, batch: Sequence[Received]) -> list[Outcome]:
        self.batches.append([m.message_id for m in batch])
        self.on_call()
        step = self.calls.pop(0) if self.calls else None
        if isinstance(step, BaseException):
            raise step
        return step if step is not None else [Applied() for _ in batch]


def messages(count: int) -> list[Received]:
    return [received(b"{}", message_id=f"m{i}", attributes={"topic": "t", "data": "d"}) for i in range(count)]


def dead_letter_for(message: Received, reason: DeadLetter, subscription: str) -> tuple[bytes, dict[str, str]]:
    return message.data, {**message.attributes, "error": reason.code, "source_subscription": subscription}


def settings(**changes: Any) -> ConsumerSettings:
    values: dict[str, Any] = {
        "subscription": "orders_data-sub",
        "dead_letter_topic": "dlq_orders_data",
        "batch_size": 10,
        "exit_after_idle": 0.3,
        "ack_deadline": 60,
        "stats_interval": 60.0,
        "retry_initial": 0.001,
        "retry_maximum": 0.002,
    }
    values.update(changes)
    return ConsumerSettings(**values)


def consumer(
    subscription: FakeSubscription,
    handler: Handler,
    dead: FakeDeadLetters | None = None,
    stop: threading.Event | None = None,
    **changes: object,
) -> Consumer:
    return Consumer(
        subscription,
        handler,
        dead or FakeDeadLetters(),
        settings(**changes),
        stop or threading.Event(),
        dead_letter_for,
        lease_tick=0.05,
    )


def acks(batch: list[Received]) -> list[str]:
    return [m.ack_id for m in batch]


# --- sort_outcomes ------------------------------------------------------------------------------


def test_sort_outcomes_pairs_each_message_with_its_outcome():
    batch = messages(5)
    plan = sort_outcomes(batch, [Applied(), DeadLetter("invalid_json", "x"), Retry("down"), Fail("bug"), Defer(30)])
    assert plan.applied == [batch[0]]
    assert plan.dead == [(batch[1], DeadLetter("invalid_json", "x"))]
    assert plan.retry == [batch[2]]
    assert plan.failed == [(batch[3], "bug")]
    assert plan.deferred == {30: [batch[4]]}


@pytest.mark.parametrize("count", [0, 2, 4])
def test_outcomes_of_the_wrong_length_are_an_error(count):
    with pytest.raises(ValueError, match=f"{count} outcomes for 3 messages"):
        sort_outcomes(messages(3), [Applied()] * count)


def test_an_unknown_outcome_is_an_error():
    with pytest.raises(ValueError, match="unknown outcome"):
        sort_outcomes(messages(1), ["applied"])


# --- the loop: one outcome each ----------------------------------------------------------------


def test_each_outcome_is_settled_its_own_way():
    batch = messages(5)
    subscription = FakeSubscription(to_pull=list(batch))
    dead = FakeDeadLetters()
    handler = ScriptedHandler([Applied(), DeadLetter("invalid_json", "bad"), Fail("boom"), Defer(120), Retry("down")])
    stats = consumer(subscription, handler, dead).run()

    assert subscription.acked == [*acks(batch[:2]), batch[4].ack_id]  # applied and dead-lettered; the retry later
    assert subscription.nacked() == [batch[2].ack_id, batch[3].ack_id]  # the failure; at exit, the deferral
    assert subscription.set_to(120) == [batch[3].ack_id]
    assert dead.published == [
        (b"{}", {"topic": "t", "data": "d", "error": "invalid_json", "source_subscription": "orders_data-sub"})
    ]
    assert handler.batches == [[f"m{i}" for i in range(5)], ["m4"]]  # only the retried message again
    assert (stats.received, stats.applied, stats.nacked, stats.deferred, stats.retried) == (5, 2, 1, 1, 1)
    assert dict(stats.dead_lettered) == {"invalid_json": 1}


def test_a_deferred_message_is_handed_back_when_the_consumer_stops():
    deferred, applied = messages(2)
    subscription = FakeSubscription(to_pull=[deferred, applied])
    stats = consumer(subscription, ScriptedHandler([Defer(600), Applied()])).run()
    assert subscription.set_to(600) == [deferred.ack_id]
    assert subscription.nacked() == [deferred.ack_id]  # visible again at once, not in 10 minutes
    assert (stats.deferred, stats.nacked) == (1, 0)


def test_a_deferral_that_has_ended_is_not_handed_back():
    [message] = messages(1)
    subscription = FakeSubscription(to_pull=[message])
    consumer(subscription, ScriptedHandler([Defer(1)]), exit_after_idle=1.3).run()  # idle outlasts the deferral
    assert subscription.set_to(1) == [message.ack_id]
    assert subscription.nacked() == []


def test_messages_are_leased_on_arrival_and_every_lease_is_released_when_settled():
    batch = messages(3)
    subscription = FakeSubscription(to_pull=list(batch))
    loop = consumer(subscription, ScriptedHandler([Applied(), Fail("x"), Defer(30)]))
    loop.run()
    assert subscription.deadlines[0] == (tuple(acks(batch)), 60)  # extended on arrival, before anything else
    assert loop._leases.held() == set()


def test_a_transient_dead_letter_failure_is_retried_in_place_then_acked():
    batch = messages(2)
    subscription = FakeSubscription(to_pull=list(batch))
    dead = FakeDeadLetters(results=[PubSubUnavailable("publish failed: 503")])
    handler = ScriptedHandler([Applied(), DeadLetter("invalid_json", "x")], [DeadLetter("invalid_json", "x")])
    stats = consumer(subscription, handler, dead).run()
    assert subscription.acked == acks(batch)
    assert len(dead.published) == 1 and subscription.nacked() == []
    assert (stats.applied, sum(stats.dead_lettered.values()), stats.retried) == (1, 1, 1)


def test_a_dead_letter_refused_for_good_is_nacked_and_the_others_acked():
    batch = messages(2)
    subscription = FakeSubscription(to_pull=list(batch))
    dead = FakeDeadLetters(results=[["too many attributes", None]])
    handler = ScriptedHandler([DeadLetter("invalid_json", "x"), DeadLetter("invalid_json", "y")])
    stats = consumer(subscription, handler, dead).run()
    assert subscription.nacked() == [batch[0].ack_id]
    assert subscription.acked == [batch[1].ack_id]
    assert (stats.nacked, sum(stats.dead_lettered.values())) == (1, 1)


def test_on_a_subscription_without_a_dead_letter_policy_a_refused_dead_letter_is_deferred_not_nacked():
    # The replay's dead-letter subscription: a nack there is redelivered at once, for ever.
    batch = messages(2)
    subscription = FakeSubscription(to_pull=list(batch))
    dead = FakeDeadLetters(results=[["message too large", None]])
    handler = ScriptedHandler([DeadLetter("order_not_found", "x"), DeadLetter("order_not_found", "y")])
    loop = Consumer(
        subscription,
        handler,
        dead,
        settings(exit_after_idle=0.3),
        threading.Event(),
        dead_letter_for,
        lease_tick=0.05,
        defer_refused=600,
    )
    stats = loop.run()
    assert subscription.nacked() == [batch[0].ack_id]  # handed back at exit, once
    assert subscription.set_to(600) == [batch[0].ack_id] and subscription.acked == [batch[1].ack_id]
    assert (stats.nacked, stats.deferred) == (0, 1)


def test_a_fatal_dead_letter_error_hands_everything_back_and_stops_the_consumer():
    batch = messages(3)
    subscription = FakeSubscription(to_pull=list(batch))
    dead = FakeDeadLetters(results=[FatalError("dead-letter topic projects/p/topics/x does not exist")])
    loop = consumer(
        subscription,
        ScriptedHandler([Applied(), DeadLetter("invalid_json", "x"), Applied()]),
        dead,
        exit_after_idle=None,
    )
    with pytest.raises(FatalError, match="does not exist"):
        loop.run()
    assert subscription.acked == []  # nothing was settled before the dead letters were out
    assert sorted(subscription.nacked()) == sorted(acks(batch))
    assert loop._leases.held() == set()


def test_a_fatal_store_error_from_the_handler_hands_the_batch_back_and_stops():
    batch = messages(2)
    subscription = FakeSubscription(to_pull=list(batch))
    loop = consumer(subscription, ScriptedHandler(FatalError("Unauthorized")), exit_after_idle=None)
    with pytest.raises(FatalError):
        loop.run()
    assert sorted(subscription.nacked()) == sorted(acks(batch))
    assert loop.stats.nacked == 0  # handed back, not counted as the messages' failure
    assert loop._leases.held() == set()


def test_an_unexpected_handler_error_nacks_the_batch_and_the_loop_carries_on():
    first, second = messages(2)
    subscription = FakeSubscription(to_pull=[first])
    handler = ScriptedHandler(RuntimeError("a bug"))
    loop = consumer(subscription, handler, exit_after_idle=0.5)
    threading.Timer(0.1, lambda: subscription.to_pull.append(second)).start()
    stats = loop.run()
    assert subscription.nacked() == [first.ack_id]
    assert subscription.acked == [second.ack_id]
    assert (stats.nacked, stats.applied) == (1, 1)


def test_a_handler_that_returns_too_few_outcomes_nacks_the_batch_and_leaks_no_lease():
    batch = messages(3)
    subscription = FakeSubscription(to_pull=list(batch))
    loop = consumer(subscription, ScriptedHandler([Applied()]))
    stats = loop.run()
    assert sorted(subscription.nacked()) == sorted(acks(batch))
    assert subscription.acked == []
    assert stats.nacked == 3
    assert loop._leases.held() == set()


def test_stop_during_a_retry_with_no_grace_hands_the_messages_back_uncounted():
    batch = messages(2)
    subscription = FakeSubscription(to_pull=list(batch))
    stop = threading.Event()
    retries: list[Outcome] = [Retry("down"), Retry("down")]
    handler = ScriptedHandler(*[retries] * 10_000, on_call=stop.set)
    stats = consumer(subscription, handler, stop=stop, exit_after_idle=None, stop_grace=0).run()
    assert sorted(subscription.nacked()) == sorted(acks(batch))
    assert (stats.nacked, stats.applied, stats.retried) == (0, 0, 2 * len(handler.batches))


def test_a_stop_settles_what_is_held_within_the_grace_period_instead_of_handing_it_back():
    """A stop pulls no more, but the batch being retried and the batches pulled ahead are
    settled: a hand-back costs every message a delivery attempt."""
    batch = messages(6)
    subscription = FakeSubscription(to_pull=list(batch))
    stop = threading.Event()
    handler = ScriptedHandler([Retry("down"), Retry("down")], [Retry("down"), Retry("down")], on_call=stop.set)
    stats = consumer(
        subscription, handler, stop=stop, batch_size=2, batches_in_flight=1, exit_after_idle=None, stop_grace=5
    ).run()
    pulled = [m for m in batch if m not in subscription.to_pull]
    assert len(pulled) > 2  # the batch in hand and some pulled ahead, all settled below
    assert sorted(subscription.acked) == sorted(acks(pulled))
    assert subscription.nacked() == []
    assert (stats.applied, stats.nacked) == (len(pulled), 0)


def at_attempt(message: Received, attempt: int) -> Received:
    return message._replace(delivery_attempt=attempt)


@pytest.mark.parametrize(("limit", "first"), [(100, 90), (5, 4), (10, 9), (20, 18), (None, None)])
def test_the_last_chance_keeps_a_tenth_of_the_policy_in_hand(limit, first):
    assert last_chance(limit) == first


def test_a_message_at_its_last_attempts_is_dead_lettered_not_handed_back_at_a_stop():
    """Handed back, it would be moved raw by the subscription's policy: no reason, no metric."""
    early, late = at_attempt(messages(2)[0], 3), at_attempt(messages(2)[1], 90)
    subscription = FakeSubscription(to_pull=[early, late])
    stop = threading.Event()
    dead = FakeDeadLetters()
    retries: list[Outcome] = [Retry("Cassandra timed out")] * 2
    handler = ScriptedHandler(*[retries] * 10_000, on_call=stop.set)
    loop = Consumer(
        subscription,
        handler,
        dead,
        settings(exit_after_idle=None, stop_grace=0),
        stop,
        dead_letter_for,
        lease_tick=0.05,
        max_delivery_attempts=100,
    )
    stats = loop.run()
    assert subscription.nacked() == [early.ack_id]
    assert subscription.acked == [late.ack_id]
    assert [attributes["error"] for _, attributes in dead.published] == ["delivery_attempts_exhausted"]
    assert dict(stats.dead_lettered) == {"delivery_attempts_exhausted": 1}


def test_a_batch_that_fails_unexpectedly_is_dead_lettered_at_its_last_attempts_with_the_error():
    early, late = at_attempt(messages(2)[0], 1), at_attempt(messages(2)[1], 95)
    subscription = FakeSubscription(to_pull=[early, late])
    seen: list[DeadLetter] = []

    def dead_letter_seen(message: Received, reason: DeadLetter, subscription: str) -> tuple[bytes, dict[str, str]]:
        seen.append(reason)
        return dead_letter_for(message, reason, subscription)

    loop = Consumer(
        subscription,
        ScriptedHandler(RuntimeError("a bug")),
        FakeDeadLetters(),
        settings(),
        threading.Event(),
        dead_letter_seen,
        lease_tick=0.05,
        max_delivery_attempts=100,
    )
    stats = loop.run()
    assert subscription.nacked() == [early.ack_id] and subscription.acked == [late.ack_id]
    [reason] = seen
    assert reason.code == "delivery_attempts_exhausted"
    assert "delivery attempt 95 of 100" in reason.detail and "RuntimeError('a bug')" in reason.detail
    assert (stats.nacked, sum(stats.dead_lettered.values())) == (1, 1)


def test_without_a_dead_letter_policy_nothing_is_taken_early():
    message = at_attempt(messages(1)[0], 0)  # Pub/Sub gives 0 when the subscription has no policy
    subscription = FakeSubscription(to_pull=[message])
    loop = consumer(subscription, ScriptedHandler(RuntimeError("a bug")))
    stats = loop.run()
    assert subscription.nacked() == [message.ack_id] and stats.nacked == 1


def test_a_dead_letter_publish_that_fails_part_way_is_not_published_twice():
    batch = messages(3)
    subscription = FakeSubscription(to_pull=list(batch))
    dead = FakeDeadLetters(results=[PartlyPublished("publish failed: 503", frozenset({0}), {})])
    handler = ScriptedHandler([DeadLetter("invalid_json", "x")] * 3, [DeadLetter("invalid_json", "x")] * 2)
    stats = consumer(subscription, handler, dead).run()
    assert handler.batches == [["m0", "m1", "m2"], ["m1", "m2"]]  # only what did not go out, again
    assert sorted(subscription.acked) == sorted(acks(batch))
    assert sum(stats.dead_lettered.values()) == 3


def test_a_forced_exit_during_the_first_hand_back_still_hands_back_the_rest():
    """A second signal raises KeyboardInterrupt wherever the main thread is: in the middle of
    the first hand-back at exit (the deferred messages), the later ones must still run (here:
    the message a pull under way brings)."""
    deferred, late = messages(2)
    interrupted = threading.Event()

    class Interrupting(FakeSubscription):
        def pull(self, max_messages: int, timeout: float) -> list[Received]:
            with self.lock:
                first, self.to_pull = self.to_pull, []
            if first:
                return first
            if late.ack_id in self.nacked():
                threading.Event().wait(timeout)
                return []
            threading.Event().wait(0.6)  # under way when the stop comes
            return [late]

        def nack(self, ack_ids: Sequence[str]) -> None:
            if deferred.ack_id in ack_ids and not interrupted.is_set():
                interrupted.set()
                raise KeyboardInterrupt  # the second signal, during the first hand-back
            super().nack(ack_ids)

    subscription = Interrupting(to_pull=[deferred])
    stop = threading.Event()
    loop = consumer(subscription, ScriptedHandler([Defer(600)], on_call=stop.set), stop=stop, stop_grace=0)
    with pytest.raises(KeyboardInterrupt):
        loop.run()
    assert interrupted.is_set()
    assert subscription.nacked() == [late.ack_id]  # handed back after the interrupted hand-back
    assert loop._leases.held() == set()


def test_a_forced_exit_during_a_write_hands_back_the_batch_and_everything_pulled_ahead():
    batch = messages(6)
    subscription = FakeSubscription(to_pull=list(batch))
    loop = consumer(subscription, ScriptedHandler(KeyboardInterrupt()), batch_size=2, exit_after_idle=None)
    with pytest.raises(KeyboardInterrupt):
        loop.run()
    pulled = [m for m in batch if m not in subscription.to_pull]
    assert len(pulled) > 2  # the batch in hand and some pulled ahead
    assert sorted(set(subscription.nacked())) == sorted(acks(pulled))
    assert loop._leases.held() == set()


# --- batches in flight --------------------------------------------------------------------------


class MeetingHandler:
    """Applies every batch, but each call first waits (5 s at most) until `parties` calls are
    inside at once; records the most calls ever inside together."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=5)
        self.lock = threading.Lock()
        self.inside = 0
        self.most_inside = 0
        self.broken = 0

    def handle(self, batch: Sequence[Received]) -> list[Outcome]:
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            self.barrier.wait()
        except threading.BrokenBarrierError:
            with self.lock:
                self.broken += 1
            raise
        finally:
            with self.lock:
                self.inside -= 1
        return [Applied() for _ in batch]


def test_what_start_up_allocated_is_kept_out_of_the_collectors_scans_while_consuming():
    """The modules, clients and metadata live as long as the process: a full collection that
    rescans them at every few thousand messages only costs CPU (`gc.freeze`); the freeze ends
    with the run, so a later cycle of that memory can still be collected."""
    frozen_during: list[int] = []
    subscription = FakeSubscription(to_pull=messages(2))
    handler = ScriptedHandler(on_call=lambda: frozen_during.append(gc.get_freeze_count()))
    assert gc.get_freeze_count() == 0
    stats = consumer(subscription, handler).run()
    assert stats.applied == 2
    assert frozen_during and all(count > 0 for count in frozen_during)
    assert gc.get_freeze_count() == 0


def test_young_collections_are_spaced_out_while_consuming_and_as_they_were_after():
    before = gc.get_threshold()
    during: list[tuple[int, ...]] = []
    subscription = FakeSubscription(to_pull=messages(2))
    handler = ScriptedHandler(on_call=lambda: during.append(gc.get_threshold()))
    try:
        gc.set_threshold(700, 10, 10)  # CPython's defaults
        consumer(subscription, handler).run()
        assert during and all(thresholds == (20_000, 10, 10) for thresholds in during)
        assert gc.get_threshold() == (700, 10, 10)
    finally:
        gc.set_threshold(*before)


def test_two_batches_are_written_at_once_and_each_is_acked():
    """The second batch is handed to the store while the first is still being written."""
    batch = messages(4)
    subscription = FakeSubscription(to_pull=list(batch))
    handler = MeetingHandler(parties=2)
    stats = consumer(subscription, handler, batch_size=2, batches_in_flight=2, exit_after_idle=0.5).run()
    assert handler.broken == 0
    assert sorted(subscription.acked) == sorted(acks(batch))
    assert (stats.received, stats.applied, stats.nacked) == (4, 4, 0)


def test_never_more_batches_in_flight_than_allowed():
    batch = messages(12)
    subscription = FakeSubscription(to_pull=list(batch))
    handler = MeetingHandler(parties=3)  # meets only if 3 are inside at once
    stats = consumer(subscription, handler, batch_size=2, batches_in_flight=3, exit_after_idle=0.5).run()
    assert handler.most_inside == 3
    assert sorted(subscription.acked) == sorted(acks(batch))
    assert stats.applied == 12


def test_with_one_batch_in_flight_a_batch_waits_for_the_one_before():
    batch = messages(2)
    subscription = FakeSubscription(to_pull=list(batch))
    handler = ScriptedHandler()
    inside = threading.Lock()
    overlapped = []

    def one_at_a_time() -> None:
        if not inside.acquire(blocking=False):
            overlapped.append(True)
            return
        threading.Event().wait(0.05)
        inside.release()

    handler.on_call = one_at_a_time
    stats = consumer(subscription, handler, batch_size=1, batches_in_flight=1).run()
    assert overlapped == []
    assert handler.batches in (
        [["m0"], ["m1"]],
        [["m1"], ["m0"]],
    )
    assert stats.applied == 2


def test_a_fatal_error_in_one_batch_hands_back_the_batch_retrying_beside_it():
    batch = messages(4)
    retrying = threading.Event()

    class FatalBeside:
        def handle(self, part: Sequence[Received]) -> list[Outcome]:
            if part[0].message_id == "m0":
                retrying.set()
                return [Retry("down") for _ in part]
            retrying.wait(5)
            raise FatalError("Unauthorized")

    subscription = FakeSubscription(to_pull=list(batch))
    loop = consumer(subscription, FatalBeside(), batch_size=2, batches_in_flight=2, exit_after_idle=None)
    with pytest.raises(FatalError, match="Unauthorized"):
        loop.run()
    assert subscription.acked == []
    assert sorted(set(subscription.nacked())) == sorted(acks(batch))
    assert loop.stats.nacked == 0
    assert loop._leases.held() == set()


def test_a_second_signal_while_waiting_for_a_batch_hands_everything_back():
    """Stopping waits for the batch being written; a forced exit (KeyboardInterrupt, raised by a
    second signal in the main thread) during that wait still hands every held message back."""
    batch = messages(6)
    subscription = FakeSubscription(to_pull=list(batch))
    stop, release, first = threading.Event(), threading.Event(), threading.Lock()

    def blocked_write() -> None:
        if first.acquire(blocking=False):  # the first batch: one signal, while its write hangs
            stop.set()
            threading.Timer(0.3, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)).start()
        release.wait(5)

    loop = consumer(subscription, ScriptedHandler(on_call=blocked_write), stop=stop, batch_size=2, exit_after_idle=None)
    # Python raises KeyboardInterrupt on SIGINT only if its parent did not ignore SIGINT, and a
    # shell ignores it for what it starts in the background: install that handler here.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run()
        pulled = [m for m in batch if m not in subscription.to_pull]
        assert sorted(set(subscription.nacked())) == sorted(acks(pulled))
        assert subscription.acked == []
        assert loop._leases.held() == set()
    finally:
        release.set()
        signal.signal(signal.SIGINT, previous)


def test_a_second_signal_while_the_last_pulls_end_still_hands_everything_back():
    """After a graceful stop has joined the workers, it waits for the pulls under way (up to a
    pull's timeout): a second signal then must not skip handing back what was deferred."""
    batch = messages(4)
    idle_pull = threading.Event()

    class SlowPull(FakeSubscription):
        def pull(self, max_messages: int, timeout: float) -> list[Received]:
            with self.lock:
                taken, self.to_pull = self.to_pull[:max_messages], self.to_pull[max_messages:]
            if not taken:
                idle_pull.set()
                threading.Event().wait(8)  # a long poll that brings nothing
            return taken

    subscription = SlowPull(to_pull=list(batch))
    stop = threading.Event()
    handler = ScriptedHandler([Defer(600)] * 2, [Defer(600)] * 2)
    loop = consumer(subscription, handler, stop=stop, batch_size=2, exit_after_idle=None)

    def two_signals() -> None:
        wait_for_calls = threading.Event()
        while len(subscription.set_to(600)) < 4 or not idle_pull.is_set():
            wait_for_calls.wait(0.01)
        stop.set()  # the first signal: a graceful stop
        wait_for_calls.wait(1.5)  # the workers are joined; the stop now waits for the pulls
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # see the test above
    try:
        threading.Thread(target=two_signals, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            loop.run()
        assert sorted(subscription.nacked()) == sorted(acks(batch))
        assert loop._leases.held() == set()
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_idle_exit_waits_for_a_batch_still_being_retried():
    """Nothing new arrives while one batch retries for longer than the idle limit: the consumer
    must finish that batch, not exit and hand it back."""
    [message] = messages(1)
    subscription = FakeSubscription(to_pull=[message])
    retry: list[Outcome] = [Retry("down")]
    handler = ScriptedHandler(*[retry] * 6)
    stats = consumer(
        subscription, handler, exit_after_idle=0.3, retry_initial=0.1, retry_maximum=0.2, batches_in_flight=2
    ).run()
    assert subscription.acked == [message.ack_id]
    assert (stats.applied, stats.retried, stats.nacked) == (1, 6, 0)


# --- the lease keeper ---------------------------------------------------------------------------


def test_the_keeper_extends_held_messages_every_tick():
    subscription = FakeSubscription()
    keeper = LeaseKeeper(subscription, deadline=60, tick=0.01)
    keeper.hold(["a", "b"])
    keeper.start()
    try:
        extended = threading.Event()
        subscription.on_modify = lambda: extended.set() if len(subscription.deadlines) >= 2 else None
        assert extended.wait(5)
    finally:
        keeper.stop()
    assert all(sorted(ids) == ["a", "b"] and seconds == 60 for ids, seconds in subscription.deadlines)


def test_the_keeper_survives_a_round_that_fails_and_extends_again_at_the_next():
    subscription = FakeSubscription()
    keeper = LeaseKeeper(subscription, deadline=60, tick=0.01)
    keeper.hold(["a"])
    rounds: list[int] = []
    extended_again = threading.Event()

    def fail_once() -> None:
        rounds.append(1)
        if len(rounds) == 1:
            raise RuntimeError("whatever went wrong in one round")
        extended_again.set()

    subscription.on_modify = fail_once
    keeper.start()
    try:
        assert extended_again.wait(5), "the keeper stopped after a failed round"
    finally:
        keeper.stop()


@pytest.mark.parametrize(("leased_for", "extended"), [(0, True), (10, True), (59, True), (60, False), (600, True)])
def test_arrival_sets_our_deadline_unless_a_pull_leases_for_exactly_that(leased_for, extended):
    """A pull leases for the subscription's own ack deadline: shorter, it is extended; longer, it
    is shortened (a consumer that dies lets go after our deadline); the same, no extra call."""
    subscription = FakeSubscription()
    keeper = LeaseKeeper(subscription, deadline=60, tick=3600, leased_for=leased_for)
    keeper.hold(["a", "b"])
    assert subscription.deadlines == ([(("a", "b"), 60)] if extended else [])
    assert keeper.held() == {"a", "b"}
    keeper.extend_all()  # the keeper's rounds extend them either way
    ids, seconds = subscription.deadlines[-1]
    assert (sorted(ids), seconds) == (["a", "b"], 60)


def test_a_release_waits_for_an_extension_under_way_so_a_nack_is_never_undone():
    """The keeper's snapshot was taken before the release: without the lock, its extension could
    land after the nack and lease the message again for a whole deadline."""
    subscription = FakeSubscription()
    keeper = LeaseKeeper(subscription, deadline=60, tick=3600)
    keeper.hold(["a"])
    inside, go_on = threading.Event(), threading.Event()

    def slow_extension() -> None:
        inside.set()
        go_on.wait(5)

    subscription.on_modify = slow_extension
    extension = threading.Thread(target=keeper.extend_all)
    extension.start()
    assert inside.wait(5)
    released = threading.Event()

    def release() -> None:
        keeper.release(["a"])
        released.set()

    releaser = threading.Thread(target=release)
    releaser.start()
    assert not released.wait(0.2)  # blocked while the extension is under way
    go_on.set()
    extension.join(5)
    releaser.join(5)
    assert released.is_set()
    subscription.on_modify = lambda: None
    subscription.nack(["a"])
    keeper.extend_all()  # the next tick no longer touches it
    assert subscription.deadlines[-1] == (("a",), 0)


# --- the prefetcher -----------------------------------------------------------------------------


def started_prefetcher(subscription: FakeSubscription, deadline: int) -> tuple[Prefetcher, LeaseKeeper]:
    """A prefetcher of 3 a pull, 4 at most buffered, leasing for `deadline`; started."""
    keeper = LeaseKeeper(subscription, deadline=deadline, tick=3600)
    prefetcher = Prefetcher(
        subscription, keeper, pull_size=3, max_buffered=4, pull_timeout=0.01, retry_delay=lambda _: 0.0
    )
    prefetcher.start()
    return prefetcher, keeper


def test_the_prefetcher_leases_what_it_pulls_and_keeps_at_most_max_buffered():
    subscription = FakeSubscription(to_pull=messages(10))
    prefetcher, keeper = started_prefetcher(subscription, deadline=45)
    first = prefetcher.take(10, timeout=5)
    left = prefetcher.stop()
    assert 1 <= len(first) <= 4 and len(first) + len(left) <= 4 + 3
    assert keeper.held() >= {m.ack_id for m in first + left}
    assert all(seconds == 45 for _, seconds in subscription.deadlines)


def test_the_prefetcher_pulls_on_two_threads_at_once_and_still_buffers_at_most_max_buffered():
    """Each pull is a round trip (and Pub/Sub may return fewer than asked): two at once keep
    the buffer fuller, so the batch workers take fuller batches."""
    meeting = threading.Barrier(2, timeout=5)
    first_pulls = threading.Semaphore(2)

    class Meeting(FakeSubscription):
        def pull(self, max_messages: int, timeout: float) -> list[Received]:
            if first_pulls.acquire(blocking=False):  # the first two pulls meet inside
                with suppress(threading.BrokenBarrierError):
                    meeting.wait()  # breaks after 5 s if the other pull never comes
            return super().pull(max_messages, timeout)

    subscription = Meeting(to_pull=messages(40))
    keeper = LeaseKeeper(subscription, deadline=60, tick=3600)
    prefetcher = Prefetcher(
        subscription, keeper, pull_size=3, max_buffered=4, pull_timeout=0.01, retry_delay=lambda _: 0.0, pullers=2
    )
    prefetcher.start()
    taken: list[Received] = []
    most = 0
    while len(taken) < 40:
        most = max(most, prefetcher.buffered())
        taken += prefetcher.take(1, timeout=5)
    assert prefetcher.stop() == []
    assert not meeting.broken
    assert sorted(m.message_id for m in taken) == sorted(m.message_id for m in messages(40))
    assert most <= 4


def test_the_prefetcher_retries_an_unavailable_pull_and_raises_a_fatal_one():
    class Flaky(FakeSubscription):
        calls = 0

        def pull(self, max_messages: int, timeout: float) -> list[Received]:
            self.calls += 1
            if self.calls == 1:
                raise PubSubUnavailable("pull failed: 503")
            raise FatalError("subscription projects/p/subscriptions/s does not exist")

    subscription = Flaky()
    prefetcher, _ = started_prefetcher(subscription, deadline=60)
    with pytest.raises(FatalError, match="does not exist"):
        prefetcher.take(1, timeout=5)
    prefetcher.stop()
    assert subscription.calls == 2
