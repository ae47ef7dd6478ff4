"""Which version wins: the write timestamp and the batch's own choice, checked without services.

Expected values are computed here from docs/guarantees.md's rule, not with the module's helpers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from ecom_pipeline.errors import InvalidMessage
from ecom_pipeline.versions import first_publish_time, newest_per_key, tie_break, waiting_since, write_timestamp

PUBLISHED = datetime(2026, 3, 1, 12, 0, 0, 250_999, tzinfo=UTC)  # 250.999 ms past the second


def test_the_write_timestamp_is_the_millisecond_in_microseconds_plus_the_id_modulo_1000():
    seconds = int((PUBLISHED - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds())
    assert write_timestamp(PUBLISHED, "4000000000000321") == seconds * 1_000_000 + 250_000 + 321


@pytest.mark.parametrize(
    "published",
    [
        datetime(2026, 3, 1, 12, 0, 0, 250_999, tzinfo=UTC),
        datetime(2026, 3, 1, 14, 0, 0, 250_999, tzinfo=timezone(timedelta(hours=2))),  # the same instant
        datetime(2026, 3, 1, 12, 0, 0, 250_999),  # naive: taken as UTC
    ],
)
def test_the_write_timestamp_of_one_instant_is_one_number_whatever_its_time_zone(published):
    # 2026-03-01T12:00:00Z is 1,772,366,400 s after the epoch (56 years with 14 leap days, plus
    # 59 days and 12 hours); the 250th millisecond, then the id's last three digits.
    assert write_timestamp(published, "4000000000000321") == 1_772_366_400_250_321


def test_the_later_millisecond_wins_whatever_the_ids():
    later = PUBLISHED + timedelta(milliseconds=1)
    assert write_timestamp(later, "1000") > write_timestamp(PUBLISHED, "999")


@pytest.mark.parametrize("message_id", ["m-1", "abc", "٣٣٣", "12a"])
def test_an_id_that_is_not_decimal_ascii_still_gets_a_stable_tie_break_below_1000(message_id):
    assert 0 <= tie_break(message_id) < 1000
    assert tie_break(message_id) == tie_break(message_id)


def test_consecutive_ids_of_one_request_never_tie():
    ids = [str(7_000_000_000_000_000 + k) for k in range(1000)]
    assert len({write_timestamp(PUBLISHED, i) for i in ids}) == 1000


def test_an_input_topic_attribute_is_never_read():
    claimed = {"source_publish_time": (PUBLISHED - timedelta(days=1)).isoformat(), "source_message_id": "5"}
    assert first_publish_time(PUBLISHED, claimed, from_dead_letters=False) == (PUBLISHED, None)


def test_a_dead_letters_claim_within_bounds_is_its_first_publish_time_and_source():
    first = PUBLISHED - timedelta(days=30)
    claimed = {"source_publish_time": first.isoformat(), "source_message_id": "4000000000000777"}
    assert first_publish_time(PUBLISHED, claimed, from_dead_letters=True) == (first, "4000000000000777")


@pytest.mark.parametrize("offset", [timedelta(days=90, seconds=1), timedelta(milliseconds=-1), timedelta(days=-3)])
def test_a_claim_out_of_bounds_is_refused_and_its_age_counts_from_the_copy(offset):
    claimed = {"source_publish_time": (PUBLISHED - offset).isoformat()}
    with pytest.raises(InvalidMessage, match="outside"):
        first_publish_time(PUBLISHED, claimed, from_dead_letters=True)
    assert waiting_since(PUBLISHED, claimed) == PUBLISHED


def test_newest_per_key_points_every_version_at_its_rows_winner_and_breaks_full_ties_by_id():
    keys = [1, 2, 1, 1, 2]
    timestamps = [10, 20, 30, 30, 5]
    ids = ["9", "1", "10", "2", "3"]
    # key 1: positions 0, 2, 3; 2 and 3 tie on 30, id 10 > 2 as numbers; key 2: position 1
    assert newest_per_key(keys, timestamps, ids) == [2, 1, 2, 2, 1]
