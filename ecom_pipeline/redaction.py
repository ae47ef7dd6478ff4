"""Card numbers never reach a dead letter: Luhn-valid digit runs are masked to their last four.

A dead letter is read by people, by hand; the pipeline itself only ever holds a card's last four
digits. Whatever an upstream system sends, before a message is dead-lettered every run of 13 to
19 digits (spaces or dashes between them allowed) that passes the Luhn check is masked, in the
data and in the attributes (names and values): every digit but the last four becomes `*`,
separators are kept. Within a run of up to 19 digits each Luhn-valid stretch of 13 or more is
masked, so a card number cannot hide behind one more digit; a run of more than 19 digits, which
no field of ours holds, is masked whole but for its last four (a bounded amount of work per
digit, however long the run a publisher sends).

Data that is a JSON object is masked as JSON, value by value (escaped digits, nested objects,
repeated names included), and written out again, compact, only if something was masked (never
longer than it was, but for a lone surrogate's escapes: Pub/Sub takes 10 MB). Its top-level id
fields (integers: ids are bigints) and valid date fields are left alone, so that a payment
waiting for its order stays applicable. Anything else is masked as text, with no exception, and
with JSON's escaped digits (`\u0034`) read as digits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime

from .messages import MAX_DATE_LENGTH, MIN_DATE_LENGTH

__all__ = ["MAX_DIGITS", "MIN_DIGITS", "luhn_valid", "mask_attributes", "mask_card_numbers", "mask_message"]

MIN_DIGITS, MAX_DIGITS = 13, 19
# A run of digits with at most one space or dash between two digits.
_RUN = re.compile(rb"\d(?:[ -]?\d)*")
_STARS = bytes.maketrans(b"0123456789", b"**********")
# A digit's contribution when doubled by the Luhn check, indexed by its ASCII code.
_DOUBLED = bytes.maketrans(b"0123456789", bytes([0, 2, 4, 6, 8, 1, 3, 5, 7, 9]))
ID_FIELDS = frozenset({"order_id", "customer_id", "payment_id"})
DATE_FIELDS = frozenset({"creation_date", "payment_datetime"})
_INTEGER = re.compile(r"-?[0-9]+")
_DIGIT_ESCAPE = re.compile(rb"\\u003([0-9])")


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
        masked = _mask_run(run.group())
        if masked is not None:
            pieces += [data[last : run.start()], masked]
            last = run.end()
    if not pieces:
        return data, False
    pieces.append(data[last:])
    return b"".join(pieces), True


def _mask_text(text: str) -> tuple[str, bool]:
    masked, was = mask_card_numbers(text.encode("utf-8", "surrogatepass"))
    return (masked.decode("utf-8", "surrogatepass"), True) if was else (text, False)


class _Object(list[tuple[str, object]]):
    """A JSON object as its (name, value) pairs: order and repeated names kept."""


class _Number(str):
    """A JSON number as its text (no int() on a 5,000-digit number)."""


def _is_date(value: object) -> bool:
    """A date the schema takes (fromisoformat alone takes any number of fraction digits)."""
    if not isinstance(value, str) or not MIN_DATE_LENGTH <= len(value) <= MAX_DATE_LENGTH:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _kept(name: str, value: object) -> bool:
    """A top-level field the handlers read as an id or a date, and valid as one."""
    if name in ID_FIELDS:
        return isinstance(value, _Number) and _INTEGER.fullmatch(value) is not None
    return name in DATE_FIELDS and not isinstance(value, _Number) and _is_date(value)


def _mask_json(value: object, top: bool = False) -> tuple[object, bool]:
    if isinstance(value, _Object):
        pairs, changed = _Object(), False
        for name, item in value:
            if top and _kept(name, item):
                pairs.append((name, item))
                continue
            new_name, name_masked = _mask_text(name)
            new_item, item_masked = _mask_json(item)
            pairs.append((new_name, new_item))
            changed = changed or name_masked or item_masked
        return pairs, changed
    if isinstance(value, list):
        items = [_mask_json(item) for item in value]
        return [item for item, _ in items], any(masked for _, masked in items)
    if isinstance(value, str):  # a string, or a number's text (masked, it becomes a string)
        masked, was = _mask_text(value)
        return (masked if was else value), was
    return value, False  # true, false, null


def _dump(value: object, ascii_only: bool) -> str:
    if isinstance(value, _Object):
        return "{" + ",".join(f"{_dump(name, ascii_only)}:{_dump(item, ascii_only)}" for name, item in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dump(item, ascii_only) for item in value) + "]"
    if isinstance(value, _Number):
        return str(value)
    return json.dumps(value, ensure_ascii=ascii_only)


def mask_message(data: bytes) -> tuple[bytes, bool]:
    """A message's data with every card number masked (see the module's docstring), and whether
    anything was."""
    try:
        decoded = json.loads(data, object_pairs_hook=_Object, parse_int=_Number, parse_float=_Number)
        if isinstance(decoded, _Object):
            masked, changed = _mask_json(decoded, top=True)
            if not changed:
                return data, False
            try:
                return _dump(masked, ascii_only=False).encode("utf-8"), True
            except UnicodeEncodeError:  # a lone surrogate, from a \ud800 escape: keep it escaped
                return _dump(masked, ascii_only=True).encode("ascii"), True
    except (ValueError, RecursionError):  # not JSON (or nested too deep to walk): masked as text
        pass
    # As text, with JSON's escaped digits (\u0034) read as the digits a reader's tool shows.
    masked, changed = mask_card_numbers(_DIGIT_ESCAPE.sub(rb"\1", data))
    return (masked, True) if changed else (data, False)


def mask_attributes(attributes: Mapping[str, str]) -> tuple[dict[str, str], bool]:
    """The attributes with their names and values masked as text, and whether any was."""
    masked: dict[str, str] = {}
    changed = False
    for name, value in attributes.items():
        new_name, name_masked = _mask_text(name)
        new_value, value_masked = _mask_text(value)
        masked[new_name] = new_value
        changed = changed or name_masked or value_masked
    return masked, changed
