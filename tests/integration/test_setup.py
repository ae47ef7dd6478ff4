"""`admin setup` and `admin requeue` against the real emulator (issues 21 and 22): an existing
input subscription is brought to the dead-letter policy set-up now makes, and dead letters that
Pub/Sub's own policy moved are requeued and applied. Every test uses its own uuid-named topics."""

from __future__ import annotations

import logging

import pytest

from ecom_pipeline.admin import SubscriptionSpec, ensure_subscriptions

from .conftest import Topics
from .test_pipeline import ORDERS, ORDERS_DLQ


def test_setup_raises_an_existing_input_subscriptions_attempts_from_5_to_100_and_then_leaves_it(
    topics: Topics, caplog: pytest.LogCaptureFixture
) -> None:
    settings, subscriber = topics.settings, topics.subscriber
    path = settings.subscription_path(topics.sub(ORDERS))
    dead_letter_topic = settings.topic_path(topics.name(ORDERS_DLQ))
    # The subscription as the set-up before issue 21 made it.
    subscriber.delete_subscription(subscription=path)
    subscriber.create_subscription(
        request={
            "name": path,
            "topic": settings.topic_path(topics.name(ORDERS)),
            "ack_deadline_seconds": 10,
            "dead_letter_policy": {"dead_letter_topic": dead_letter_topic, "max_delivery_attempts": 5},
        }
    )
    spec = SubscriptionSpec(topics.name(ORDERS), topics.name(ORDERS_DLQ), ack_deadline=10)

    with caplog.at_level(logging.INFO, logger="ecom_pipeline.admin"):
        ensure_subscriptions(settings, [spec])
    policy = subscriber.get_subscription(subscription=path).dead_letter_policy
    assert (policy.dead_letter_topic, policy.max_delivery_attempts) == (dead_letter_topic, 100)
    [updated] = [r.getMessage() for r in caplog.records if "dead-letter policy updated" in r.getMessage()]
    assert topics.sub(ORDERS) in updated and "5 to 100" in updated

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ecom_pipeline.admin"):
        ensure_subscriptions(settings, [spec])  # converged: nothing more to change
    assert [r for r in caplog.records if "dead-letter policy updated" in r.getMessage()] == []
    assert subscriber.get_subscription(subscription=path).dead_letter_policy.max_delivery_attempts == 100
