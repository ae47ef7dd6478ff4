"""Card numbers never reach a dead letter: Luhn-valid digit runs are masked to their last four.

A dead letter is read by people, by hand; the pipeline itself only ever holds a card's last four
digits. Whatever an upstream system sends, before a message is dead-lettered every run of 13 to
19 digits (spaces or dashes between them allowed) that passes the Luhn check is masked, in the
data and in the attribute values: every digit but the last four becomes `*`, separators are
kept. Within a run of up to 19 digits each Luhn-valid stretch of 13 or more is masked, so a
card number cannot hide behind one more digit; a run of more than 19 digits, which no field of
ours holds, is masked whole but for its last four (a bounded amount of work per digit, however
long the run a publisher sends). The JSON value of an id field (`"order_id": 123…`)
is left alone: ids are bigints, and a payment waiting for its order must stay applicable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["MAX_DIGITS", "MIN_DIGITS", "luhn_valid", "mask_attributes", "mask_card_numbers"]

MIN_DIGITS, MAX_DIGITS = 13, 19
# A run of digits with at most one space or dash between two digits.
_RUN = re.compile(rb"\d(?:[ -]?\d)*")
_STARS = bytes.maketrans(b"0123456789", b"**********")
# A digit's contribution when doubled by the Luhn check, indexed by its ASCII code.
_DOUBLED = bytes.maketrans(b"0123456789", bytes([0, 2, 4, 6, 8, 1, 3, 5, 7, 9]))
_ID_VALUE = re.compile(rb'"(?:order_id|customer_id|payment_id)"\s*:\s*$')


def luhn_valid(digits: bytes) -> bool:
    """The Luhn checksum of ASCII digits (the check card numbers carry)."""
    from_right = digits[::-1]
    plain, doubled = from_right[0::2], from_right[1::2]
    total = sum(plain) - 48 * len(plain) + sum(doubled.translate(_DOUBLED))
    return total % 10 == 0


def _card_positions(digits: bytes) -> set[int]:
    """Positions (in `digits`, at most 19 of them) of every digit of a Luhn-valid stretch of 13
    or more, its last four excepted."""
    masked: set[int] = set()
    for length in range(MIN_DIGITS, len(digits) + 1):
        for start in range(len(digits) - length + 1):
            if luhn_valid(digits[start : start + length]):
                masked.update(range(start, start + length - 4))
    return masked


def _last_four_start(run: bytes) -> int:
    """Where the run's last four digits begin (at most seven bytes from its end)."""
    seen = 0
    for position in range(len(run) - 1, -1, -1):
        if 48 <= run[position] <= 57:
            seen += 1
            if seen == 4:
                return position
    return 0


def _mask_run(run: bytes) -> bytes | None:
    """The run of digits (and separators) masked, or None when it holds no card number."""
    digits = run.replace(b" ", b"").replace(b"-", b"")
    if len(digits) < MIN_DIGITS:
        return None
    if len(digits) > MAX_DIGITS:  # no field of ours: all but the last four digits
        keep_from = _last_four_start(run)
        return run[:keep_from].translate(_STARS) + run[keep_from:]
    digit_offsets = [i for i, byte in enumerate(run) if 48 <= byte <= 57]
    masked = _card_positions(digits)
    if not masked:
        return None
    text = bytearray(run)
    for position in masked:
        text[digit_offsets[position]] = ord("*")
    return bytes(text)


def mask_card_numbers(data: bytes) -> tuple[bytes, bool]:
    """`data` with every card-number-like run masked, and whether anything was."""
    pieces: list[bytes] = []
    last = 0
    for run in _RUN.finditer(data):
        is_number = run.group().isdigit()
        if is_number and _ID_VALUE.search(data[max(0, run.start() - 64) : run.start()]):
            continue  # the value of an id field
        masked = _mask_run(run.group())
        if masked is not None:
            pieces += [data[last : run.start()], masked]
            last = run.end()
    if not pieces:
        return data, False
    pieces.append(data[last:])
    return b"".join(pieces), True


def mask_attributes(attributes: Mapping[str, str]) -> tuple[dict[str, str], bool]:
    """The attribute values masked the same way (names are kept), and whether any was."""
    masked: dict[str, str] = {}
    changed = False
    for name, value in attributes.items():
        new, was = mask_card_numbers(value.encode("utf-8"))
        masked[name] = new.decode("utf-8") if was else value
        changed = changed or was
    return masked, changed
