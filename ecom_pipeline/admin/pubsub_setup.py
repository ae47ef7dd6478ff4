"""Set-up on Pub/Sub: the topics, and the subscriptions with their dead-letter policies (idempotent)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from google.api_core import exceptions as google_exceptions
from google.api_core.retry import Retry, if_exception_type
from google.auth import exceptions as auth_exceptions
from google.cloud import pubsub_v1

from ..config import (
    MAX_DELIVERY_ATTEMPTS,
    ORDERS_DLQ_TOPIC,
    ORDERS_TOPIC,
    PAYMENTS_DLQ_TOPIC,
    PAYMENTS_TOPIC,
    PubSubSettings,
    subscription_for,
)
from ..errors import FatalError
from ..policy import DEAD_LETTER_RETENTION
from ..pubsub_io import NO_CREDENTIALS, RPC_TIMEOUT, TRANSIENT_GOOGLE_ERRORS, PubSubUnavailable
from ..pubsub_io import translate_error as translate_pubsub_error

__all__ = [
    "SETUP_WAIT",
    "SubscriptionSpec",
    "ensure_subscriptions",
    "ensure_topics",
    "patience",
    "pipeline_subscriptions",
    "subscription_request",
]

log = logging.getLogger(__package__)  # "ecom_pipeline.admin": the command's lines, one name
C = TypeVar("C")
SETUP_WAIT = 60.0  # seconds set-up waits for a service that does not answer (`--wait`)
# A dead-letter subscription keeps unacked messages as long as Pub/Sub allows (7 days), and is
# never deleted for inactivity (an empty expiration policy: Google Cloud's default is 31 days).
DEAD_LETTER_KEEPING: dict[str, object] = {
    "message_retention_duration": DEAD_LETTER_RETENTION,
    "expiration_policy": {},
}


@dataclass(frozen=True)
class SubscriptionSpec:
    topic: str
    dead_letter_topic: str | None = None  # with a dead-letter policy and a retry policy
    max_delivery_attempts: int = MAX_DELIVERY_ATTEMPTS  # the policy's backstop (config.py says why)
    ack_deadline: int = 60
    minimum_backoff: int = 10
    maximum_backoff: int = 300
    keeps_dead_letters: bool = False  # retention as long as Pub/Sub allows, and never expires

    @property
    def name(self) -> str:
        return subscription_for(self.topic)


def pipeline_subscriptions() -> list[SubscriptionSpec]:
    """The design's subscriptions; the two input ones cap poison messages with a dead-letter policy."""
    return [
        SubscriptionSpec(ORDERS_TOPIC, ORDERS_DLQ_TOPIC),
        SubscriptionSpec(PAYMENTS_TOPIC, PAYMENTS_DLQ_TOPIC),
        SubscriptionSpec(ORDERS_DLQ_TOPIC, keeps_dead_letters=True),
        SubscriptionSpec(PAYMENTS_DLQ_TOPIC, keeps_dead_letters=True),
    ]


@contextmanager
def _pubsub_call(settings: PubSubSettings, doing: str, missing: str, wait: float) -> Iterator[None]:
    """Pub/Sub's errors during set-up as the pipeline's: `PubSubUnavailable` once it has not
    answered for `wait` seconds, `FatalError` for what no wait changes (one line each)."""
    try:
        yield
    except google_exceptions.RetryError as exc:
        where = f" (PUBSUB_EMULATOR_HOST={settings.emulator_host})" if settings.emulator_host else ""
        raise PubSubUnavailable(f"Pub/Sub did not answer within {wait:g} s{where}: {doing}: {exc.cause}") from exc
    except google_exceptions.NotFound as exc:
        raise FatalError(f"{doing} failed: {missing} does not exist ({exc.message})") from exc
    except google_exceptions.GoogleAPICallError as exc:
        raise translate_pubsub_error(exc, doing, missing) from exc


def patience(wait: float) -> dict[str, object]:
    """Retry and timeout of one administrative call (set-up's, the bench's deletions): a refusal
    is an error at once, and a Pub/Sub that is down or too busy to answer is tried again until
    `wait` seconds have passed (the client's own default retries CreateTopic for 10 minutes, in
    silence); one attempt lasts at most RPC_TIMEOUT."""
    retry = Retry(predicate=if_exception_type(*TRANSIENT_GOOGLE_ERRORS), initial=0.5, maximum=5.0, timeout=wait)
    return {"retry": retry, "timeout": RPC_TIMEOUT}


def _client(kind: Callable[[], C]) -> C:
    """A Pub/Sub client (the emulator when PUBSUB_EMULATOR_HOST is set); `FatalError` without credentials."""
    try:
        return kind()
    except auth_exceptions.DefaultCredentialsError as exc:
        raise FatalError(NO_CREDENTIALS) from exc


def ensure_topics(settings: PubSubSettings, topics: list[str], wait: float = SETUP_WAIT) -> None:
    """Create each topic that does not exist yet."""
    publisher = _client(pubsub_v1.PublisherClient)
    for topic in topics:
        path = settings.topic_path(topic)
        with _pubsub_call(settings, f"creating topic {path}", f"project {settings.project}", wait):
            try:
                publisher.create_topic(name=path, **patience(wait))
                log.info("created topic %s", topic)
            except google_exceptions.AlreadyExists:
                log.info("topic %s exists", topic)


def subscription_request(settings: PubSubSettings, spec: SubscriptionSpec) -> dict[str, object]:
    """The CreateSubscription request for `spec`: its topic, ack deadline and policies."""
    request: dict[str, object] = {
        "name": settings.subscription_path(spec.name),
        "topic": settings.topic_path(spec.topic),
        "ack_deadline_seconds": spec.ack_deadline,
    }
    if spec.dead_letter_topic:
        request["dead_letter_policy"] = {
            "dead_letter_topic": settings.topic_path(spec.dead_letter_topic),
            "max_delivery_attempts": spec.max_delivery_attempts,
        }
        request["retry_policy"] = {
            "minimum_backoff": timedelta(seconds=spec.minimum_backoff),
            "maximum_backoff": timedelta(seconds=spec.maximum_backoff),
        }
    if spec.keeps_dead_letters:
        request.update(DEAD_LETTER_KEEPING)
    return request


def ensure_subscriptions(settings: PubSubSettings, specs: list[SubscriptionSpec], wait: float = SETUP_WAIT) -> None:
    """Create each subscription, or bring an existing one to the spec's dead-letter policy and
    retention (the emulator refuses to update an expiration policy, so that one is left)."""
    for attempts in sorted({spec.max_delivery_attempts for spec in specs if spec.dead_letter_topic}):
        log.info(
            "input subscriptions dead-letter a message after %d delivery attempts (Pub/Sub's maximum is 100): "
            "Pub/Sub counts every nack and every hand-back at a consumer's stop as an attempt, so the consumer "
            "dead-letters a failing message itself, with its reason, and the policy is only a backstop",
            attempts,
        )
    subscriber = _client(pubsub_v1.SubscriberClient)
    with subscriber:
        for spec in specs:
            request = subscription_request(settings, spec)
            missing = f"topic {spec.topic}" + (f" or topic {spec.dead_letter_topic}" if spec.dead_letter_topic else "")
            with _pubsub_call(settings, f"setting up subscription {request['name']}", missing, wait):
                try:
                    subscriber.create_subscription(request=request, **patience(wait))
                    log.info("created subscription %s", spec.name)
                except google_exceptions.AlreadyExists:
                    log.info("subscription %s exists", spec.name)
                    if spec.dead_letter_topic:
                        _ensure_dead_letter_policy(subscriber, settings, spec, spec.dead_letter_topic, wait)
                    if spec.keeps_dead_letters:  # one made before this setting: update its retention
                        # (the emulator refuses to update an expiration policy; Google Cloud does not)
                        subscriber.update_subscription(
                            subscription={"name": request["name"], "message_retention_duration": DEAD_LETTER_RETENTION},
                            update_mask={"paths": ["message_retention_duration"]},
                            **patience(wait),
                        )


def _ensure_dead_letter_policy(
    subscriber: pubsub_v1.SubscriberClient,
    settings: PubSubSettings,
    spec: SubscriptionSpec,
    dead_letter_topic: str,
    wait: float,
) -> None:
    """An existing subscription whose dead-letter policy is not the spec's gets the spec's (one
    made by an older set-up, with 5 attempts): Pub/Sub updates a dead-letter policy in place."""
    path, topic = settings.subscription_path(spec.name), settings.topic_path(dead_letter_topic)
    current = subscriber.get_subscription(subscription=path, **patience(wait)).dead_letter_policy
    if (current.dead_letter_topic, current.max_delivery_attempts) == (topic, spec.max_delivery_attempts):
        return
    subscriber.update_subscription(
        subscription={
            "name": path,
            "dead_letter_policy": {"dead_letter_topic": topic, "max_delivery_attempts": spec.max_delivery_attempts},
        },
        update_mask={"paths": ["dead_letter_policy"]},
        **patience(wait),
    )
    log.info(
        "subscription %s: dead-letter policy updated from %d to %d delivery attempts (to %s)",
        spec.name,
        current.max_delivery_attempts,
        spec.max_delivery_attempts,
        dead_letter_topic,
    )
