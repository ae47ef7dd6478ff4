"""The pure decisions: backoff delays, dead-letter attributes, event times and the replay's pacing."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from ecom_pipeline.policy import (
    MAX_ATTRIBUTE_BYTES,
    Backoff,
    dead_letter_attributes,
    redact_dead_letter,
    replay_delay,
)
from ecom_pipeline.versions import first_publish_time

UTC = UTC
FIRST_PUBLISHED = datetime(2026, 3, 1, 9, 30, 15, 123_456, tzinfo=UTC)
FAILED_AT = datetime(2026, 3, 1, 9, 31, 0, 500_000, tzinfo=UTC)
NOW = datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)


# --- Backoff ------------------------------------------------------------------------------------


def test_backoff_first_attempt_waits_between_half_and_all_of_initial():
    backoff = Backoff(initial=0.2, maximum=10.0, multiplier=2.0)
    assert backoff.delay(0, rand=lambda: 0.0) == pytest.approx(0.1)
    assert backoff.delay(0, rand=lambda: 1.0) == pytest.approx(0.2)


def test_backoff_ceiling_grows_exponentially_with_attempts():
    backoff = Backoff(initial=0.5, maximum=1000.0, multiplier=3.0)
    ceilings = [backoff.delay(attempt, rand=lambda: 1.0) for attempt in range(5)]
    assert ceilings == pytest.approx([0.5, 1.5, 4.5, 13.5, 40.5])


def test_backoff_is_capped_at_maximum_even_for_huge_attempts():
    backoff = Backoff(initial=0.2, maximum=10.0)
    for attempt in (6, 7, 20, 64, 1000, 10**9):
        assert backoff.delay(attempt, rand=lambda: 1.0) == pytest.approx(10.0)
        assert backoff.delay(attempt, rand=lambda: 0.0) == pytest.approx(5.0)


@pytest.mark.parametrize("attempt", range(12))
def test_backoff_with_real_jitter_stays_between_half_ceiling_and_ceiling(attempt):
    backoff = Backoff(initial=0.2, maximum=10.0, multiplier=2.0)
    ceiling = min(10.0, 0.2 * 2.0**attempt)
    rand = random.Random(attempt).random
    delays = [backoff.delay(attempt, rand=rand) for _ in range(200)]
    assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
    assert len(set(delays)) > 1  # jittered, so consumers do not retry in lockstep


def test_backoff_uses_the_injected_random_source():
    backoff = Backoff(initial=4.0, maximum=100.0)
    assert backoff.delay(0, rand=lambda: 0.5) == pytest.approx(3.0)


# --- dead_letter_attributes ---------------------------------------------------------------------


def dead_letter(original: dict[str, str] | None = None, **overrides: Any) -> dict[str, str]:
    arguments: dict[str, Any] = {
        "code": "order_not_found",
        "detail": "order_id 7 does not exist",
        "subscription": "payments_data-sub",
        "message_id": "msg-42",
        "publish_time": FIRST_PUBLISHED,
        "failed_at": FAILED_AT,
    }
    arguments.update(overrides)
    return dead_letter_attributes(original or {}, **arguments)


def test_dead_letter_keeps_the_original_attributes():
    attributes = dead_letter({"trace_id": "abc", "tenant": "shop-1"})
    assert attributes["trace_id"] == "abc"
    assert attributes["tenant"] == "shop-1"


def test_dead_letter_adds_why_where_from_and_when():
    attributes = dead_letter()
    assert attributes["error"] == "order_not_found"
    assert attributes["error_detail"] == "order_id 7 does not exist"
    assert attributes["source_subscription"] == "payments_data-sub"
    assert attributes["source_message_id"] == "msg-42"
    assert datetime.fromisoformat(attributes["source_publish_time"]) == FIRST_PUBLISHED
    assert datetime.fromisoformat(attributes["failed_at"]) == FAILED_AT.replace(microsecond=500_000)


def test_dead_letter_every_value_is_a_string():
    assert all(isinstance(value, str) for value in dead_letter({"a": "b"}).values())


def test_dead_letter_failed_at_is_iso_8601_in_utc_even_from_another_zone():
    paris = timezone(timedelta(hours=1))
    attributes = dead_letter(failed_at=datetime(2026, 3, 1, 11, 0, tzinfo=paris))
    failed_at = datetime.fromisoformat(attributes["failed_at"])
    assert failed_at.utcoffset() == timedelta(0)
    assert failed_at == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def test_dead_letter_source_publish_time_is_utc_with_microseconds():
    attributes = dead_letter(publish_time=FIRST_PUBLISHED.astimezone(timezone(timedelta(hours=-5))))
    source = datetime.fromisoformat(attributes["source_publish_time"])
    assert source.utcoffset() == timedelta(0)
    assert source == FIRST_PUBLISHED
    assert source.microsecond == 123_456


def test_dead_letter_does_not_modify_the_original_mapping():
    original = {"trace_id": "abc"}
    dead_letter(original)
    assert original == {"trace_id": "abc"}


@pytest.mark.parametrize("character", ["x", "é", "€", "😀"], ids=["ascii", "2-byte", "3-byte", "4-byte"])
def test_an_oversized_detail_is_truncated_to_the_attribute_limit_on_a_character_boundary(character):
    detail = character * 5000
    truncated = dead_letter(detail=detail)["error_detail"]
    assert len(truncated.encode("utf-8")) <= MAX_ATTRIBUTE_BYTES
    assert truncated.endswith("...")
    assert detail.startswith(truncated[:-3])  # a prefix of whole characters, nothing mangled
    assert len(truncated.encode("utf-8")) > MAX_ATTRIBUTE_BYTES - 8  # and it keeps as much as fits


def test_a_detail_exactly_at_the_limit_is_kept_whole():
    detail = "y" * MAX_ATTRIBUTE_BYTES
    assert dead_letter(detail=detail)["error_detail"] == detail


def test_a_second_dead_lettering_from_the_dlq_keeps_the_first_source():
    first = dead_letter()
    second = dead_letter(
        first,
        code="order_not_found",
        detail="still missing",
        subscription="dlq_payments_data-sub",
        message_id="msg-99",
        publish_time=FIRST_PUBLISHED + timedelta(minutes=5),
        failed_at=FAILED_AT + timedelta(minutes=5),
        from_dead_letters=True,
    )
    assert second["source_subscription"] == "payments_data-sub"
    assert second["source_message_id"] == "msg-42"
    assert second["source_publish_time"] == first["source_publish_time"]
    assert second["error_detail"] == "still missing"
    assert datetime.fromisoformat(second["failed_at"]) == FAILED_AT + timedelta(minutes=5)


def test_source_attributes_claimed_on_an_input_topic_are_replaced_by_the_real_ones():
    forged = {
        "source_subscription": "elsewhere",
        "source_message_id": "forged",
        "source_publish_time": "2999-01-01T00:00:00+00:00",
    }
    attributes = dead_letter(forged)
    assert (attributes["source_subscription"], attributes["source_message_id"]) == ("payments_data-sub", "msg-42")
    assert datetime.fromisoformat(attributes["source_publish_time"]) == FIRST_PUBLISHED


def test_a_message_moved_by_a_dead_letter_policy_names_its_source_subscription():
    original = {
        "CloudPubSubDeadLetterSourceSubscription": "payments_data-sub",
        "CloudPubSubDeadLetterSourceDeliveryCount": "5",
    }
    attributes = dead_letter(original, subscription="dlq_payments_data-sub", from_dead_letters=True)
    assert attributes["source_subscription"] == "payments_data-sub"
    assert attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"


def test_a_policy_dead_letter_keeps_its_first_publish_time_when_dead_lettered_again():
    """A payment moved to the DLQ by Pub/Sub's dead-letter policy, then dead-lettered again by the
    replay (its order still missing), is still written with the time it was first published."""
    moved_to_dlq_at = FIRST_PUBLISHED + timedelta(minutes=3)
    from_policy = {
        "CloudPubSubDeadLetterSourceSubscription": "payments_data-sub",
        "CloudPubSubDeadLetterSourceTopicPublishTime": FIRST_PUBLISHED.isoformat(),
    }
    assert first_publish_time(moved_to_dlq_at, from_policy, from_dead_letters=True)[0] == FIRST_PUBLISHED
    again = dead_letter(
        from_policy, subscription="dlq_payments_data-sub", publish_time=moved_to_dlq_at, from_dead_letters=True
    )
    republished_at = moved_to_dlq_at + timedelta(minutes=10)
    assert first_publish_time(republished_at, again, from_dead_letters=True)[0] == FIRST_PUBLISHED


# --- first_publish_time: one function, one precedence -------------------------------------------------

EARLIER = FIRST_PUBLISHED - timedelta(hours=1)
POLICY = "CloudPubSubDeadLetterSourceTopicPublishTime"
SOURCE = "source_publish_time"


@pytest.mark.parametrize(
    ("publish_time", "attributes", "from_dead_letters", "expected"),
    [
        pytest.param(FIRST_PUBLISHED, {}, False, FIRST_PUBLISHED, id="the-publish-time"),
        pytest.param(FIRST_PUBLISHED.replace(tzinfo=None), {}, False, FIRST_PUBLISHED, id="naive-is-utc"),
        pytest.param(FIRST_PUBLISHED.astimezone(timezone(timedelta(hours=9))), {}, False, FIRST_PUBLISHED, id="offset"),
        # On an input topic, attributes are whatever the publisher claims: never trusted.
        pytest.param(FIRST_PUBLISHED, {SOURCE: EARLIER.isoformat()}, False, FIRST_PUBLISHED, id="input-ignores-source"),
        pytest.param(FIRST_PUBLISHED, {POLICY: EARLIER.isoformat()}, False, FIRST_PUBLISHED, id="input-ignores-policy"),
        pytest.param(
            FIRST_PUBLISHED, {SOURCE: "2999-01-01T00:00:00+00:00"}, False, FIRST_PUBLISHED, id="input-far-future"
        ),
        # On a dead-letter subscription: Pub/Sub's policy attribute, then ours, then the publish time.
        pytest.param(FIRST_PUBLISHED, {SOURCE: EARLIER.isoformat()}, True, EARLIER, id="dlq-source"),
        pytest.param(FIRST_PUBLISHED, {POLICY: "2026-03-01T08:30:15.123456Z"}, True, EARLIER, id="dlq-policy-z"),
        pytest.param(
            FIRST_PUBLISHED,
            {POLICY: EARLIER.isoformat(), SOURCE: (EARLIER + timedelta(minutes=1)).isoformat()},
            True,
            EARLIER,
            id="dlq-policy-first",
        ),
        pytest.param(
            FIRST_PUBLISHED, {POLICY: "mangled", SOURCE: EARLIER.isoformat()}, True, EARLIER, id="dlq-mangled-policy"
        ),
        # A claim later than the dead letter itself is refused: tests/unit/test_versions.py.
        pytest.param(datetime(1970, 1, 1, tzinfo=UTC), {}, False, datetime(1970, 1, 1, tzinfo=UTC), id="epoch"),
    ],
)
def test_first_publish_time(publish_time, attributes, from_dead_letters, expected):
    assert first_publish_time(publish_time, attributes, from_dead_letters=from_dead_letters)[0] == expected
    assert first_publish_time(publish_time, attributes, from_dead_letters=from_dead_letters)[0] == expected


@pytest.mark.parametrize(
    "mangled",
    [
        "yesterday",
        "2026-13-01T00:00:00",
        "1772357415",
        "",
        "  ",
        # Valid ISO-8601 whose UTC time falls outside year 1 .. 9999 (an OverflowError, not a ValueError).
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
    ],
)
def test_first_publish_time_ignores_a_mangled_source_time(mangled):
    assert first_publish_time(NOW, {SOURCE: mangled}, from_dead_letters=True)[0] == NOW


def test_first_publish_time_round_trips_through_dead_letter_attributes():
    attributes = dead_letter(publish_time=FIRST_PUBLISHED)
    assert first_publish_time(NOW, attributes, from_dead_letters=True)[0] == FIRST_PUBLISHED


# --- replay_delay -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "delay"), [(-5, 5), (0, 5), (12.5, 5), (12.6, 6), (30, 12), (100, 40), (1499, 600), (10**9, 600)]
)
def test_replay_delay_is_40_percent_of_the_age_between_5_and_600_seconds(age, delay):
    assert replay_delay(age) == delay


def test_a_payment_up_to_30_s_ahead_of_its_order_is_retried_within_15_s_of_the_order():
    """Walk the schedule: every gap that covers an order arriving 0-30 s late is at most 15 s."""
    tries, age = [0.0], 0.0
    while age < 60:
        age += replay_delay(age)
        tries.append(age)
    for order_arrives in range(31):
        next_try = min(t for t in tries if t >= order_arrives)
        assert next_try - order_arrives <= 15, (order_arrives, tries)


# --- redact_dead_letter: card numbers masked -----------------------------------------------------


def test_a_dead_letter_with_a_card_number_is_masked_and_marked():
    data = b'{"payment_id": 1, "card_last_four": "4111111111111111"}'
    masked, attributes = redact_dead_letter(data, dead_letter({"note": "card 4111-1111-1111-1111"}), applicable=False)
    assert masked == b'{"payment_id":1,"card_last_four":"************1111"}'  # written out compact
    assert attributes["note"] == "card ****-****-****-1111"
    assert attributes["redacted"] == "card_number"


# The fields of a valid payment but its ids and date.
PAYMENT = b'"payment_method": "card", "card_last_four": "1111", "payment_status": "paid"'


def test_a_dead_letter_without_a_card_number_is_unchanged_and_unmarked():
    # A valid payment waiting for its order: its ids are kept (the replay applies it later).
    data = b'{"payment_id": 1, "order_id": 4111111111111111, "payment_datetime": "2026-03-01", ' + PAYMENT + b"}"
    masked, attributes = redact_dead_letter(data, dead_letter({"trace": "abc"}), applicable=True)
    assert masked == data
    assert "redacted" not in attributes and attributes["trace"] == "abc"


@pytest.mark.parametrize(
    "data",
    [
        # A payment valid as it is, waiting for its order: its dates must stay applicable.
        b'{"payment_id": 1, "order_id": 2, "payment_datetime": "2026-03-01 000200", ' + PAYMENT + b"}",  # Luhn-valid
        b'{"payment_id": 1, "order_id": 2, "payment_datetime": "2026-03-01T12:00:00.411111+00:00", ' + PAYMENT + b"}",
    ],
)
def test_a_valid_date_field_is_not_taken_for_a_card_number(data):
    masked, attributes = redact_dead_letter(data, dead_letter(), applicable=True)
    assert masked == data and "redacted" not in attributes


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # Only a top-level id field holds an id; the same name nested is anyone's field.
        (
            b'{"order_id": 1, "extra": {"order_id": 4111111111111111}}',
            b'{"order_id":1,"extra":{"order_id":"************1111"}}',
        ),
        # Not JSON: nothing in it is an id.
        (b'{"payment_id": 4111111111111111', b'{"payment_id": ************1111'),
        # Escaped digits are digits to whoever decodes the JSON.
        (
            b'{"payment_method": "\\u0034111111111111111"}',
            b'{"payment_method":"************1111"}',
        ),
        # A repeated name: the value JSON readers drop is masked too.
        (b'{"item": "4111111111111111", "item": "x"}', b'{"item":"************1111","item":"x"}'),
        # A date field that is no date is text like any other.
        (b'{"payment_datetime": "4111111111111111"}', b'{"payment_datetime":"************1111"}'),
        # ... and so is one with more fraction digits than a date holds (room for a card number),
        (
            b'{"payment_datetime": "2026-03-01T12:00:00.4111111111111111"}',
            b'{"payment_datetime":"2026-03-01T**:**:**.************1111"}',
        ),
        # ... and a date the replay does not read.
        (
            b'{"order_id": 2, "creation_date": "2026-03-01 000200"}',
            b'{"order_id":2,"creation_date":"****-**-** **0200"}',
        ),
        # ... and one longer than the schema takes (a date that can never be applied).
        (
            b'{"payment_datetime": "2026-03-01T12:00:00.' + b"0" * 40 + b'4111111111111111"}',
            b'{"payment_datetime":"2026-03-01T**:**:**.' + b"*" * 52 + b'1111"}',
        ),
    ],
)
def test_a_card_number_anywhere_but_a_top_level_id_or_date_is_masked(data, expected):
    masked, attributes = redact_dead_letter(data, dead_letter(), applicable=True)
    assert (masked, attributes["redacted"]) == (expected, "card_number")


def test_a_card_number_in_an_attribute_name_or_an_id_like_value_is_masked():
    original = {"4111111111111111": "x", "note": '"order_id": 4111111111111111'}
    _, attributes = redact_dead_letter(b"{}", dead_letter(original), applicable=True)
    assert attributes["************1111"] == "x" and "4111111111111111" not in attributes
    assert attributes["note"] == '"order_id": ************1111'
    assert attributes["redacted"] == "card_number"


def test_a_dead_letter_never_has_more_attributes_than_pub_sub_takes():
    original = {f"a{i:03}": "v" for i in range(100)}  # Pub/Sub's maximum on the source message
    _, attributes = redact_dead_letter(b'"4111111111111111"', dead_letter(original), applicable=True)  # + redacted
    assert len(attributes) == 100
    assert attributes["error"] == "order_not_found" and attributes["redacted"] == "card_number"
    kept = [name for name in attributes if name.startswith("a")]
    assert kept == [f"a{i:03}" for i in range(len(kept))]  # the first names kept, in order
    assert attributes["dropped_attributes"] == str(100 - len(kept))


def test_a_publisher_cannot_claim_a_first_publish_time_on_an_input_topic():
    # The attribute Pub/Sub's dead-letter policy sets, claimed by whoever published the payment.
    original = {POLICY: "2020-01-01T00:00:00+00:00", "CloudPubSubDeadLetterSourceSubscription": "x"}
    attributes = dead_letter(original)
    assert not [name for name in attributes if name.startswith("CloudPubSubDeadLetter")]
    assert first_publish_time(NOW, attributes, from_dead_letters=True)[0] == FIRST_PUBLISHED


def test_a_dead_letter_from_a_dead_letter_topic_stays_within_the_limit_whatever_its_names():
    original = {f"CloudPubSubDeadLetter{i:03}": "v" for i in range(98)} | {POLICY: FIRST_PUBLISHED.isoformat()}
    attributes = dead_letter(original, from_dead_letters=True)
    assert len(attributes) == 99 and attributes[POLICY] == FIRST_PUBLISHED.isoformat()
    # 98 of theirs + 7 of ours (6 added, and the policy's publish time) = 105; room for 98 + 1.
    assert attributes["dropped_attributes"] == "7"
