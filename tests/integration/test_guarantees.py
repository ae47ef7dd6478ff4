"""Delivery guarantees against the real services: late orders healed, crashes, outages, scale-out, poison.

These tests kill real processes (a consumer, and Cassandra itself) and check that nothing is
lost: every message ends applied in Cassandra or in a dead-letter topic.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from cassandra.cluster import Cluster, NoHostAvailable, Session

from ecom_pipeline.admin import SCHEMA, schema_statements
from stack.node import CASSANDRA  # our own Cassandra: its pid is checked to be ours

from .conftest import PYTHON, ROOT, Topics, applied_so_far, consumer_args, final_counts, wait_for
from .test_pipeline import ORDERS, ORDERS_DLQ, PAYMENTS, PAYMENTS_DLQ, order, payment, rows_in


def count_rows(cql: Session, first_id: int, count: int, paid: bool = False) -> int:
    total = 0
    for start in range(first_id, first_id + count, 500):
        rows = rows_in(cql, start, min(500, first_id + count - start))
        total += sum(1 for row in rows.values() if not paid or row.payment_id is not None)
    return total


def test_replay_applies_a_payment_once_its_late_order_arrives_and_keeps_true_orphans(
    run_script, topics: Topics, cql: Session, first_id: int
) -> None:
    late, never = first_id, first_id + 1
    topics.publish_json(PAYMENTS, [payment(late), payment(never)])
    payments = run_script(
        "ingest_in_fact_table.py", *consumer_args(topics, PAYMENTS, PAYMENTS_DLQ, "--exit-after-idle", 3)
    )
    assert payments.wait(120) == 0
    assert final_counts(payments.output())["order_not_found"] == 2

    topics.publish_json(ORDERS, [order(late)])  # the order arrives after its payment
    orders = run_script("order_data_consumer.py", *consumer_args(topics, ORDERS, ORDERS_DLQ, "--exit-after-idle", 3))
    assert orders.wait(120) == 0
    assert rows_in(cql, late, 1)[late].payment_id is None

    replay = run_script(
        "replay_dlq_payments.py",
        *consumer_args(topics, PAYMENTS_DLQ, PAYMENTS_DLQ, "--exit-after-idle", 3),
    )
    assert replay.wait(120) == 0, replay.output()
    assert final_counts(replay.output())["applied"] == 1

    row = rows_in(cql, late, 2)
    assert row[late].payment_id == late + 5 and never not in row  # no payment-only row is created
    counts = final_counts(replay.output())
    assert (counts["deferred"], counts["dead_lettered"]) == (1, 0)  # deferred, not republished
    [still_dead] = topics.drain(PAYMENTS_DLQ, expected=1)  # handed back when the replay exited
    attributes = still_dead.message.attributes
    assert json.loads(still_dead.message.data)["order_id"] == never
    assert attributes["error"] == "order_not_found" and "replay_attempts" not in attributes


def test_a_consumer_killed_mid_stream_loses_nothing(run_script, topics: Topics, cql: Session, first_id: int) -> None:
    total = 10_000
    topics.publish_json(ORDERS, [order(first_id + i) for i in range(total)])
    args = consumer_args(topics, ORDERS, ORDERS_DLQ, "--batch-size", 100, "--ack-deadline", 10)
    # Its own progress line, not a count of the table, says when: a count lets it drain far more.
    victim = run_script("order_data_consumer.py", *args, "--stats-interval", 0.1)
    wait_for(lambda: applied_so_far(victim.output()) >= 100, 60, "the first rows", interval=0.01)
    victim.stop(signal.SIGKILL)
    victim.process.wait()
    assert count_rows(cql, first_id, total) < total, "the consumer finished before it was killed"

    # What the dead consumer held comes back when its lease (10 s) runs out.
    successor = run_script("order_data_consumer.py", *args, "--exit-after-idle", 20)
    assert successor.wait(240) == 0, successor.output()
    assert count_rows(cql, first_id, total) == total
    assert topics.is_empty(ORDERS_DLQ)


def test_a_cassandra_outage_costs_no_message_and_no_dead_letter(
    run_script, topics: Topics, cql: Session, first_id: int, stack_env: dict[str, str]
) -> None:
    pid = CASSANDRA.pid()  # the recorded pid, only if that process is alive and is our Cassandra
    assert pid is not None, "this test restarts the project's own Cassandra (make stack), none is running"
    total = 10_000
    topics.publish_json(ORDERS, [order(first_id + i) for i in range(total)])
    args = consumer_args(topics, ORDERS, ORDERS_DLQ, "--batch-size", 100, "--stats-interval", 0.1)
    consumer = run_script("order_data_consumer.py", *args)
    wait_for(lambda: applied_so_far(consumer.output()) >= 100, 60, "the first rows", interval=0.01)

    os.kill(pid, signal.SIGKILL)
    # Seeing retries proves the consumer still had messages in flight when Cassandra died.
    wait_for(lambda: "transient failure" in consumer.output(), 60, "the consumer to notice the outage")
    subprocess.run([PYTHON, str(ROOT / "stack" / "localstack.py"), "up"], env=stack_env, check=True, timeout=300)

    def all_rows_present() -> bool:
        try:
            return count_rows(cql, first_id, total) == total
        except NoHostAvailable:  # this test's own session reconnects too
            return False

    wait_for(all_rows_present, 180, "the backlog to drain after the restart", interval=1)
    assert consumer.process.poll() is None, "the consumer should have ridden out the outage"
    assert topics.is_empty(ORDERS_DLQ)
    consumer.stop(signal.SIGTERM)
    assert consumer.wait(30) == 0
    assert final_counts(consumer.output())["dead_lettered"] == 0


def test_two_consumers_per_subscription_share_the_work_and_the_row_totals_are_exact(
    run_script, topics: Topics, cql: Session, first_id: int
) -> None:
    total = 4000
    topics.publish_json(ORDERS, [order(first_id + i) for i in range(total)])
    topics.publish_json(PAYMENTS, [payment(first_id + i) for i in range(total)])
    for script, source, dead in (
        ("order_data_consumer.py", ORDERS, ORDERS_DLQ),
        ("ingest_in_fact_table.py", PAYMENTS, PAYMENTS_DLQ),
    ):
        pair = [
            run_script(script, *consumer_args(topics, source, dead, "--batch-size", 200, "--exit-after-idle", 5))
            for _ in range(2)
        ]
        for consumer in pair:
            assert consumer.wait(240) == 0, consumer.output()
        applied = [final_counts(c.output())["applied"] for c in pair]
        # Both worked. At least once: a redelivery (an expired lease) may apply a message twice,
        # harmlessly; the rows below are exact.
        assert sum(applied) >= total and min(applied) > 0, applied
    assert count_rows(cql, first_id, total) == total
    assert count_rows(cql, first_id, total, paid=True) == total
    assert topics.is_empty(ORDERS_DLQ) and topics.is_empty(PAYMENTS_DLQ)


def test_a_row_cassandra_refuses_for_good_is_dead_lettered_at_once_with_its_reason(
    run_script, topics: Topics, first_id: int, stack_env: dict[str, str]
) -> None:
    keyspace = f"poison_{uuid.uuid4().hex[:8]}"
    hosts = [host.strip() for host in stack_env["CASSANDRA_HOSTS"].split(",")]
    cluster = Cluster(hosts, port=int(stack_env["CASSANDRA_PORT"]), protocol_version=5)
    session = cluster.connect()
    try:
        for statement in schema_statements(keyspace, SCHEMA.read_text()):
            session.execute(statement, timeout=60)
        consumer = run_script(
            "order_data_consumer.py", *consumer_args(topics, ORDERS, ORDERS_DLQ), env={"CASSANDRA_KEYSPACE": keyspace}
        )
        topics.publish_json(ORDERS, [order(first_id)])
        select = f"SELECT order_id FROM {keyspace}.orders_payments_facts WHERE order_id = %s"
        wait_for(lambda: session.execute(select, (first_id,)).one(), 60, "the first order")

        # From now on every insert fails with a server-side error no retry can fix.
        session.execute(f"ALTER TABLE {keyspace}.orders_payments_facts DROP item", timeout=60)
        topics.publish_json(ORDERS, [order(first_id + 1)])
        [dead] = topics.drain(ORDERS_DLQ, expected=1, timeout=120)
        assert json.loads(dead.message.data)["order_id"] == first_id + 1
        attributes = dead.message.attributes
        # The consumer's own dead letter, with its reason, on the first delivery: not the
        # subscription's policy, which would move it raw after 100 nacks.
        assert attributes["error"] == "write_refused" and "item" in attributes["error_detail"]
        assert not any(name.startswith("CloudPubSubDeadLetter") for name in attributes)
        datetime.fromisoformat(attributes["source_publish_time"])  # what a replay would write with
        assert consumer.process.poll() is None, "the consumer must carry on"
        consumer.stop(signal.SIGTERM)
        assert consumer.wait(30) == 0
        counts = final_counts(consumer.output())
        assert (counts["nacked"], counts["write_refused"], counts["dead_lettered"]) == (0, 1, 1)
    finally:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
        cluster.shutdown()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_one_signal_to_the_process_group_stops_the_workers_gracefully(
    sig: int, run_script, topics: Topics, cql: Session, first_id: int
) -> None:
    """A terminal's Ctrl-C, and systemd's KillMode=control-group or `kill -TERM -PGID`, signal the
    whole process group: each worker gets the signal itself and the SIGTERM its parent passes on.
    That is one stop (d4066ca: 'SIGTERM received again: forced exit', exit 1, for SIGTERM)."""
    total = 1000
    topics.publish_json(ORDERS, [order(first_id + i) for i in range(total)])
    args = consumer_args(topics, ORDERS, ORDERS_DLQ, "--workers", 2, "--batch-size", 100)
    consumer = run_script("order_data_consumer.py", *args, new_session=True)
    wait_for(lambda: count_rows(cql, first_id, total) == total, 120, f"{total} rows written by two workers")
    os.killpg(consumer.process.pid, sig)
    assert consumer.wait(60) == 0, consumer.output()
    assert "forced exit" not in consumer.output()


def test_a_stop_while_the_workers_start_is_still_one_clean_stop(run_script, topics: Topics) -> None:
    """SIGTERM while the parent is still starting its workers, none of them with handlers yet.

    CI saw it twice: 'worker-2 did not exit cleanly' (a worker killed before its handlers), and
    the parent itself killed, exit -15, with a worker left reading its half-written start-up data
    ('EOFError: Ran out of input'). The parent is not the only thread: the driver imports numpy
    when it is there, whose BLAS threads do not block what the main thread blocks. Four workers,
    and the stop sent once the first is spawned, land it inside the start-up."""
    args = consumer_args(topics, ORDERS, ORDERS_DLQ, "--workers", 4)
    consumer = run_script("order_data_consumer.py", *args, new_session=True)
    try:
        wait_for(lambda: len(spawned(consumer.process.pid)) >= 1, 30, "a first worker spawned", interval=0.002)
        consumer.stop(signal.SIGTERM)
        assert consumer.wait(60) == 0, consumer.output()
        assert "did not exit cleanly" not in consumer.output()
    finally:  # a parent that died leaves its workers running, orphaned: they are stopped here
        with contextlib.suppress(ProcessLookupError):
            os.killpg(consumer.process.pid, signal.SIGKILL)


def spawned(parent: int) -> list[int]:
    """The pids of `parent`'s multiprocessing workers (spawned interpreters, not its tracker)."""
    try:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        lines = {child: Path(f"/proc/{child}/cmdline").read_bytes() for child in map(int, children)}
    except OSError:  # a child that has just exited
        return []
    return [child for child, cmdline in lines.items() if b"spawn_main" in cmdline]


def test_workers_share_a_subscription_and_stop_together_on_sigterm(
    run_script, topics: Topics, cql: Session, first_id: int
) -> None:
    total = 3000
    topics.publish_json(ORDERS, [order(first_id + i) for i in range(total)])
    consumer = run_script(
        "order_data_consumer.py", *consumer_args(topics, ORDERS, ORDERS_DLQ, "--workers", 2, "--batch-size", 200)
    )
    wait_for(lambda: count_rows(cql, first_id, total) == total, 120, f"{total} rows written by two workers")
    consumer.stop(signal.SIGTERM)
    assert consumer.wait(60) == 0, consumer.output()
    output = consumer.output()
    assert "[worker-1]" in output and "[worker-2]" in output, output
    assert final_counts(output, "final: 2 workers: ")["applied"] >= total  # at least once
    assert topics.is_empty(ORDERS_DLQ)
