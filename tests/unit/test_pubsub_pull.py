"""`SubscriptionClient.pull` over a fake of the Pull method on the generated client's channel:
the request, the messages it returns, and its errors translated as every other Pub/Sub call's.
The answers are protobuf bytes built here field by field, so the expected values are written
apart from the code's reading of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import grpc  # type: ignore[import-untyped]  # grpcio ships no type hints
import pytest
from google.pubsub_v1.types import PullRequest, PullResponse

from ecom_pipeline import pubsub_io
from ecom_pipeline.errors import FatalError

PATH = "projects/p/subscriptions/orders_data-sub"
NEW_YEAR_2026 = 1_767_225_600  # 2026-01-01T00:00:00Z in seconds since the epoch


class FakeRpcError(grpc.RpcError):  # type: ignore[misc]  # grpcio is untyped
    """What a gRPC call raises: a status code and its details."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[()]:
        return ()


class FakeSubscriber:
    """The generated client's transport channel: `unary_unary` gives the Pull method, which serves
    one answer (response bytes, decoded by the deserializer it was given, or the gRPC error the
    call raises) and records each call: its method, the request as sent (serialized and read
    back), its timeout and its metadata."""

    def __init__(self, answer: bytes | BaseException) -> None:
        self.answer = answer
        self.calls: list[dict[str, object]] = []
        self.transport = SimpleNamespace(grpc_channel=self)

    def unary_unary(self, method: str, request_serializer: Any, response_deserializer: Any) -> Any:
        def call(request: object, *, timeout: float, metadata: object) -> object:
            sent = PullRequest.pb().FromString(request_serializer(request))
            self.calls.append(
                {
                    "method": method,
                    "subscription": sent.subscription,
                    "max_messages": sent.max_messages,
                    "timeout": timeout,
                    "metadata": metadata,
                }
            )
            if isinstance(self.answer, BaseException):
                raise self.answer
            return response_deserializer(self.answer)

        return call


def client(answer: bytes | BaseException) -> tuple[pubsub_io.SubscriptionClient, FakeSubscriber]:
    subscriber = FakeSubscriber(answer)
    return pubsub_io.SubscriptionClient(subscriber, PATH), subscriber


def response_bytes() -> bytes:
    response = PullResponse.pb()()
    first = response.received_messages.add()
    first.ack_id = "ack-1"
    first.delivery_attempt = 3
    first.message.message_id = "17"
    first.message.data = b'{"order_id": 1}'
    first.message.publish_time.seconds = NEW_YEAR_2026 + 61
    first.message.publish_time.nanos = 250_000_999  # below a microsecond: cut, as ToDatetime does
    second = response.received_messages.add()
    second.ack_id = "ack-2"
    second.message.message_id = "18"
    second.message.data = b"{}"
    second.message.attributes["source"] = "web"
    second.message.publish_time.seconds = NEW_YEAR_2026
    return response.SerializeToString()


def test_a_pull_asks_for_the_subscription_and_the_count_with_its_timeout_and_routing_header():
    subscription, subscriber = client(PullResponse.pb()().SerializeToString())
    assert subscription.pull(250, 2.5) == []
    assert subscription.pull(100, 0.5) == []
    # What the generated client sends with a pull: a routing header naming the subscription
    # (URL-encoded, its slashes kept).
    routing = (("x-goog-request-params", "subscription=projects/p/subscriptions/orders_data-sub"),)
    assert subscriber.calls == [
        {
            "method": "/google.pubsub.v1.Subscriber/Pull",
            "subscription": PATH,
            "max_messages": 250,
            "timeout": 2.5,
            "metadata": routing,
        },
        {
            "method": "/google.pubsub.v1.Subscriber/Pull",
            "subscription": PATH,
            "max_messages": 100,
            "timeout": 0.5,
            "metadata": routing,
        },
    ]


def test_each_pulled_message_keeps_its_ids_data_attributes_publish_time_and_attempt():
    subscription, _ = client(response_bytes())
    first, second = subscription.pull(1000, 1.0)
    assert (first.ack_id, first.message_id, first.data, first.delivery_attempt) == (
        "ack-1",
        "17",
        b'{"order_id": 1}',
        3,
    )
    assert first.publish_time == datetime(2026, 1, 1, 0, 1, 1, 250_000, tzinfo=UTC)
    assert first.publish_time.utcoffset() == timedelta(0)
    assert dict(first.attributes) == {}
    assert (second.ack_id, second.message_id, second.data, second.delivery_attempt) == ("ack-2", "18", b"{}", 0)
    assert second.publish_time == datetime(2026, 1, 1, tzinfo=UTC)
    assert dict(second.attributes) == {"source": "web"}


def test_messages_of_one_publish_share_its_time_and_each_change_of_time_is_seen():
    response = PullResponse.pb()()
    stamps = [(NEW_YEAR_2026, 5_000), (NEW_YEAR_2026, 5_000), (NEW_YEAR_2026, 7_000), (NEW_YEAR_2026 + 1, 5_000)]
    stamps += [(NEW_YEAR_2026, 5_000), (0, 0), (0, 0)]  # back to an earlier one; the epoch itself
    for number, (seconds, nanos) in enumerate(stamps):
        message = response.received_messages.add()
        message.ack_id = f"ack-{number}"
        message.message.publish_time.seconds = seconds
        message.message.publish_time.nanos = nanos
    subscription, _ = client(response.SerializeToString())
    times = [message.publish_time for message in subscription.pull(1000, 1.0)]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert times == [
        start + timedelta(microseconds=5),
        start + timedelta(microseconds=5),
        start + timedelta(microseconds=7),
        start + timedelta(seconds=1, microseconds=5),
        start + timedelta(microseconds=5),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
    ]


def test_a_message_without_attributes_gets_a_mapping_nobody_can_change():
    subscription, _ = client(response_bytes())
    first, _ = subscription.pull(1000, 1.0)
    with pytest.raises(TypeError):
        first.attributes["error"] = "x"  # type: ignore[index]  # the point: it is read-only


def test_a_pull_that_times_out_is_an_empty_pull():
    subscription, _ = client(FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))
    assert subscription.pull(100, 0.5) == []


def test_an_unavailable_pubsub_is_waited_for():
    subscription, _ = client(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused"))
    with pytest.raises(pubsub_io.PubSubUnavailable, match="connection refused"):
        subscription.pull(100, 0.5)


def test_a_missing_subscription_stops_the_consumer_naming_it():
    subscription, _ = client(FakeRpcError(grpc.StatusCode.NOT_FOUND, "Subscription does not exist"))
    with pytest.raises(FatalError, match=f"subscription {PATH} does not exist"):
        subscription.pull(100, 0.5)


def test_refused_credentials_stop_the_consumer():
    subscription, _ = client(FakeRpcError(grpc.StatusCode.PERMISSION_DENIED, "no pull for you"))
    with pytest.raises(FatalError, match="was refused: no pull for you"):
        subscription.pull(100, 0.5)
