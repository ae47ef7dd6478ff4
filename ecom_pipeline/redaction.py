"""Card numbers never reach a dead letter: every number a person could read as one is masked.

A dead letter is read by people, by hand; the pipeline itself only ever holds a card's last four
digits. Before a message is dead-lettered, its data and attributes are masked by this rule.

**Numbers.** A digit is any Unicode decimal digit (`str.isdecimal`: ASCII, full-width U+FF10
to U+FF19, Arabic-Indic, Devanagari...), read by its value (`unicodedata.decimal`). A
*separator* is any character that is neither a letter nor a number (Unicode categories L and
N: `str.isalnum()` is false): a space, a tab, a no-break space, a dot, a slash, an underscore,
a comma, a colon, a star, any dash (Unicode Pd) or minus sign, a zero-width space, an
undecodable byte... A *number* is a run of digits in which two consecutive digits are at most three separators
apart (`4111  1111`, `4111 - 1111`, `4111\\t1111`). A letter, any other number character (a
superscript, a fraction) or four separators in a row end a number.

**Masking.** In a number of up to 19 digits, every stretch of 13 or more consecutive digits
that passes the Luhn check is masked, so a card number cannot hide behind one more digit. A
number of more than 19 digits, which no field of ours holds, is masked whole. Masked means:
every digit of the stretch but its last four becomes `*`. The digits a masked number still
shows are written as ASCII digits (a full-width card becomes `************1111`); separators,
and numbers with no card in them, stay as they were. The work is bounded per digit, however
long the number.

**Text** (data that is not JSON; attribute names and values) is masked as text, with JSON's
escapes (`\\u0034`, `\\t`, `\\u00a0`...) read as the characters a reader's tool shows; an escaped
digit of a masked number is replaced by one `*` or its ASCII digit, other escapes stay as they
were. Data that is not UTF-8 is read with each undecodable byte as a separator, and written back
byte for byte but for the masked digits.

**JSON data** (any JSON document) is masked as a reader sees it written compact, strings
decoded: names, strings and numbers in document order with JSON's punctuation between them. So
`[4111,1111,1111,1111]` and `["4111","1111","1111","1111"]` are one number (masked), while in
`"a": 4111, "b": 1111` a name stands between the two (two numbers). A JSON number that is masked
becomes a string (`"************1111"`). The document is written out again, compact, only if
something was masked (never longer than it was, but for a masked number's quotes and a lone
surrogate's escapes; the caller caps the size).

**Exemptions.** None, but in the dead letter of a message that is valid, dead-lettered for what
happened to it (its order not found yet, a write refused, its delivery attempts used up), not for
what it is (`applicable`): the replay applies such a payment later, and an operator requeues such
an order, so their ids and dates must stay as they are. There, and only when the data is valid
for the schema (a payment's or an order's), that schema's top-level ids and date are kept as
they are: `payment_id`, `order_id` and `payment_datetime` of a payment; `order_id`,
`customer_id` and `creation_date` of an order. An id is kept when it is one the schema takes
(an integer from 1 to 2**63 - 1); a date when it is one the schema takes written as
`YYYY-MM-DD[(T| )hh[:mm[:ss[.ffffff]]]][Z|±hh[:mm]]` (or that form without `-` and `:`). In such
a date every digit is a calendar field but the fraction, at most six digits, so no card number
can be appended to it or hidden in it (only a card whose digits happen to make a valid date and
time, such as `4111-11-11 11:11:11.11`, would be kept); a date with more fraction digits, an
offset with seconds or any other form is masked like any value (a payment whose date is masked
can no longer be applied: the price of a date that can hide a card). Only the last of repeated
names is kept (the one JSON readers take). A kept value's digits still join its neighbours'
into a number: when that number holds a card, every digit of it outside the kept value is
masked. In the dead letter of an invalid message nothing is exempt: a negative, malformed or
card-like id is masked like any other value.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from datetime import datetime

from .errors import InvalidMessage
from .messages import BIGINT_MAX, MAX_DATE_LENGTH, MIN_DATE_LENGTH, parse_order, parse_payment

__all__ = [
    "MAX_DIGITS",
    "MAX_SEPARATORS",
    "MIN_DIGITS",
    "luhn_valid",
    "mask_attributes",
    "mask_card_numbers",
    "mask_message",
    "mask_text",
]

MIN_DIGITS, MAX_DIGITS = 13, 19
MAX_SEPARATORS = 3  # between two digits of one number
MASK = "*"
# In a str pattern \d is a Unicode decimal digit and [\W_] a character that is not alphanumeric.
_NUMBER = re.compile(rf"\d(?:[\W_]{{0,{MAX_SEPARATORS}}}\d)*")
_DIGIT = re.compile(r"\d")
# A number written in more characters than this has more than MAX_DIGITS digits.
_LONGEST_CARD_TEXT = MAX_DIGITS + (MAX_DIGITS - 1) * MAX_SEPARATORS
# A digit's contribution when doubled by the Luhn check, indexed by its ASCII code.
_DOUBLED = bytes.maketrans(b"0123456789", bytes([0, 2, 4, 6, 8, 1, 3, 5, 7, 9]))
# JSON's escapes, as a reader's tool decodes them (a surrogate pair as one character).
_ESCAPE = re.compile(
    r"\\(?:u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})"  # a surrogate pair
    r'|u([0-9a-fA-F]{4})|(["\\/bfnrt]))'
)
_SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
# What a valid message keeps in an applicable dead letter: the top-level ids and date of the
# schema it is valid for.
_KEPT_FIELDS: tuple[tuple[Callable[[bytes], object], frozenset[str], frozenset[str]], ...] = (
    (parse_payment, frozenset({"payment_id", "order_id"}), frozenset({"payment_datetime"})),
    (parse_order, frozenset({"order_id", "customer_id"}), frozenset({"creation_date"})),
)
_ID = re.compile(r"[1-9][0-9]{0,18}")
_KEPT_DATE = re.compile(
    r"[0-9]{4}-?[0-9]{2}-?[0-9]{2}"  # the date
    r"(?:[T ][0-9]{2}(?::?[0-9]{2}){0,2}(?:[.,][0-9]{1,6})?"  # a time, to the microsecond
    r"(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?"  # an offset, to the minute
)


def luhn_valid(digits: bytes) -> bool:
    """The Luhn checksum of ASCII digits (the check card numbers carry)."""
    from_right = digits[::-1]
    plain, doubled = from_right[0::2], from_right[1::2]
    total = sum(plain) - 48 * len(plain) + sum(doubled.translate(_DOUBLED))
    return total % 10 == 0


def _card_positions(digits: bytes) -> set[int]:
    """Positions (in `digits`, at most 19 of them) of every digit of a Luhn-valid stretch of 13
    or more, its last four excepted."""
    # The Luhn sum of every stretch from two running sums: a digit counts plain when it stands
    # an even number of places before the stretch's end, doubled otherwise.
    doubled = digits.translate(_DOUBLED)
    plain_when_even = [0]  # sums of the first i digits, those at even positions plain
    plain_when_odd = [0]
    for position, (digit, double) in enumerate(zip(digits, doubled, strict=True)):
        even = position % 2 == 0
        plain_when_even.append(plain_when_even[-1] + (digit - 48 if even else double))
        plain_when_odd.append(plain_when_odd[-1] + (double if even else digit - 48))
    masked: set[int] = set()
    for length in range(MIN_DIGITS, len(digits) + 1):
        for start in range(len(digits) - length + 1):
            end = start + length
            sums = plain_when_even if (end - 1) % 2 == 0 else plain_when_odd
            if (sums[end] - sums[start]) % 10 == 0:
                masked.update(range(start, end - 4))
    return masked


def _ascii_digits(text: str) -> str:
    """`text` with its digits written in ASCII."""
    return _DIGIT.sub(lambda digit: str(unicodedata.decimal(digit.group())), text)


def _mask_number(number: str) -> str | None:
    """The number (its digits and separators) masked, or None when it holds no card number."""
    if len(number) > _LONGEST_CARD_TEXT:  # more than MAX_DIGITS digits: all but the last four
        seen = 0
        keep_from = len(number)
        while seen < 4:  # at most 4 + 3 * MAX_SEPARATORS characters from the end
            keep_from -= 1
            seen += number[keep_from].isdecimal()
        return _DIGIT.sub(MASK, number[:keep_from]) + _ascii_digits(number[keep_from:])
    offsets = [i for i, character in enumerate(number) if character.isdecimal()]
    if len(offsets) < MIN_DIGITS:
        return None
    digits = bytes(48 + unicodedata.decimal(number[i]) for i in offsets)
    if len(digits) > MAX_DIGITS:
        masked = set(range(len(digits) - 4))
    else:
        masked = _card_positions(digits)
        if not masked:
            return None
    characters = list(number)
    for position, offset in enumerate(offsets):
        characters[offset] = MASK if position in masked else chr(digits[position])
    return "".join(characters)


def _masked_numbers(view: str, kept: Sequence[range] = ()) -> list[tuple[int, str]]:
    """Where each number of `view` that holds a card number starts, and that number masked
    (see the module's docstring), character for character. Characters in the `kept` ranges
    are never changed."""
    numbers: list[tuple[int, str]] = []
    for number in _NUMBER.finditer(view):
        if number.end() - number.start() < MIN_DIGITS:
            continue
        masked = _mask_number(number.group())
        if masked is None:
            continue
        offset = number.start()
        kept_here = [span for span in kept if span.start < number.end() and offset < span.stop]
        if kept_here:  # a kept value is left as it is, and every other digit of the number masked
            masked = "".join(
                character if any(offset + i in span for span in kept_here) or not character.isdecimal() else MASK
                for i, character in enumerate(number.group())
            )
        if masked != number.group():
            numbers.append((offset, masked))
    return numbers


def _replaced(view: str, numbers: Sequence[tuple[int, str]]) -> str:
    pieces: list[str] = []
    last = 0
    for start, masked in numbers:
        pieces += [view[last:start], masked]
        last = start + len(masked)
    pieces.append(view[last:])
    return "".join(pieces)


def _unescaped(escape: re.Match[str]) -> str:
    high, low, single, simple = escape.groups()
    if high is not None:
        return chr(0x10000 + ((int(high, 16) - 0xD800) << 10) + int(low, 16) - 0xDC00)
    if single is not None:
        return chr(int(single, 16))
    return _SIMPLE_ESCAPES[simple]


def mask_text(text: str) -> tuple[str, bool]:
    """`text` with every card number masked, JSON's escapes read as what they stand for, and
    whether anything was."""
    if "\\" not in text:
        numbers = _masked_numbers(text)
        return (_replaced(text, numbers), True) if numbers else (text, False)
    # The text as a reader's tool shows it, and where each escape stands in both.
    pieces: list[str] = []
    escapes: list[tuple[int, int, int]] = []  # (position in the view, start and end in the text)
    length = last = 0
    for escape in _ESCAPE.finditer(text):
        pieces.append(text[last : escape.start()])
        length += escape.start() - last
        escapes.append((length, escape.start(), escape.end()))
        pieces.append(_unescaped(escape))
        length += 1
        last = escape.end()
    pieces.append(text[last:])
    view = "".join(pieces)
    numbers = _masked_numbers(view)
    if not numbers:
        return text, False
    masked = _replaced(view, numbers)
    # Back to the text: an escape stays as it was, but for a digit of a masked number.
    in_numbers = iter(numbers)
    number = next(in_numbers, None)
    result: list[str] = []
    shown = 0
    for position, start, end in escapes:
        while number is not None and number[0] + len(number[1]) <= position:
            number = next(in_numbers, None)
        result.append(masked[shown:position])
        digit_of_masked_number = number is not None and number[0] <= position and view[position].isdecimal()
        result.append(masked[position] if digit_of_masked_number else text[start:end])
        shown = position + 1
    result.append(masked[shown:])
    return "".join(result), True


def mask_card_numbers(data: bytes) -> tuple[bytes, bool]:
    """`data`, as text, with every card number masked, and whether anything was."""
    masked, changed = mask_text(data.decode("utf-8", "surrogateescape"))
    return (masked.encode("utf-8", "surrogateescape"), True) if changed else (data, False)


class _Object(list[tuple[str, object]]):
    """A JSON object as its (name, value) pairs: order and repeated names kept."""


class _Number(str):
    """A JSON number as its text (no int() on a 5,000-digit number), or NaN and Infinity."""


def _is_kept_id(value: object) -> bool:
    return isinstance(value, _Number) and _ID.fullmatch(value) is not None and int(value) <= BIGINT_MAX


def _is_kept_date(value: object) -> bool:
    """A date the schema takes, in a form whose only free digits are at most six of a fraction."""
    if isinstance(value, _Number) or not isinstance(value, str):
        return False
    if not MIN_DATE_LENGTH <= len(value) <= MAX_DATE_LENGTH or _KEPT_DATE.fullmatch(value) is None:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _kept_fields(data: bytes) -> tuple[set[str], set[str]]:
    """The names of the top-level ids and dates kept in the applicable dead letter of `data`:
    those of the schemas it is valid for (none if it is valid for none)."""
    ids: set[str] = set()
    dates: set[str] = set()
    for parse, id_fields, date_fields in _KEPT_FIELDS:
        try:
            parse(data)
        except InvalidMessage:
            continue
        ids |= id_fields
        dates |= date_fields
    return ids, dates


def _kept_pairs(document: _Object, ids: set[str], dates: set[str]) -> set[int]:
    """The positions of the top-level pairs kept: the last of each kept name (the one JSON
    readers take), when its value is an id or a date as kept."""
    last = {name: position for position, (name, _) in enumerate(document)}
    kept = {last[name] for name in ids if name in last and _is_kept_id(document[last[name]][1])}
    return kept | {last[name] for name in dates if name in last and _is_kept_date(document[last[name]][1])}


class _View:
    """A JSON document as a reader sees it written compact, strings decoded, and where each of
    its names, strings and numbers stands in that text."""

    def __init__(self, document: object, kept: Container[int] = ()) -> None:
        """`kept`: the positions of the top-level pairs whose values are kept."""
        self._pieces: list[str] = []
        self._length = 0
        self.spans: list[range] = []  # of every name, string and number, in document order
        self.kept: list[range] = []
        if isinstance(document, _Object):
            self._object(document, kept)
        else:
            self._add(document)
        self.text = "".join(self._pieces)

    def _write(self, text: str) -> None:
        self._pieces.append(text)
        self._length += len(text)

    def _scalar(self, text: str) -> range:
        span = range(self._length, self._length + len(text))
        self.spans.append(span)
        self._write(text)
        return span

    def _object(self, pairs: _Object, kept: Container[int] = ()) -> None:
        self._write("{")
        for position, (name, value) in enumerate(pairs):
            self._write(',"' if position else '"')
            self._scalar(name)
            self._write('":')
            spans = len(self.spans)
            self._add(value)
            if position in kept:  # a kept value is a number or a string: one span
                self.kept.append(self.spans[spans])
        self._write("}")

    def _add(self, value: object) -> None:
        if isinstance(value, _Object):
            self._object(value)
        elif isinstance(value, list):
            self._write("[")
            for position, item in enumerate(value):
                if position:
                    self._write(",")
                self._add(item)
            self._write("]")
        elif isinstance(value, _Number):
            self._scalar(value)
        elif isinstance(value, str):
            self._write('"')
            self._scalar(value)
            self._write('"')
        else:
            self._write(json.dumps(value))  # true, false, null


def _dump(value: object, masked: Iterator[str], ascii_only: bool) -> str:
    """`value` written compact, its names, strings and numbers taken in order from `masked`."""
    if isinstance(value, _Object):
        pairs = (f"{_dump(name, masked, ascii_only)}:{_dump(item, masked, ascii_only)}" for name, item in value)
        return "{" + ",".join(pairs) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dump(item, masked, ascii_only) for item in value) + "]"
    if isinstance(value, _Number):
        text = next(masked)
        return text if text == value else json.dumps(text)  # masked, a number becomes a string
    if isinstance(value, str):
        return json.dumps(next(masked), ensure_ascii=ascii_only)
    return json.dumps(value)


def _mask_json(document: object, kept: Container[int]) -> bytes | None:
    view = _View(document, kept)
    numbers = _masked_numbers(view.text, view.kept)
    if not numbers:
        return None
    masked = _replaced(view.text, numbers)
    try:
        return _dump(document, (masked[s.start : s.stop] for s in view.spans), ascii_only=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, from a \ud800 escape: keep it escaped
        return _dump(document, (masked[s.start : s.stop] for s in view.spans), ascii_only=True).encode("ascii")


def mask_message(data: bytes, *, applicable: bool = False) -> tuple[bytes, bool]:
    """A message's data with every card number masked (see the module's docstring), and whether
    anything was. `applicable`: the message was dead-lettered for what happened to it, not for
    what it is; if it is valid, its ids and date are kept (the replay or a requeue applies it)."""
    try:
        document = json.loads(
            data, object_pairs_hook=_Object, parse_int=_Number, parse_float=_Number, parse_constant=_Number
        )
        kept = _kept_pairs(document, *_kept_fields(data)) if applicable and isinstance(document, _Object) else set()
        masked = _mask_json(document, kept)
    except (ValueError, RecursionError):  # not JSON (or nested too deep to walk): masked as text
        return mask_card_numbers(data)
    return (data, False) if masked is None else (masked, True)


def mask_attributes(attributes: Mapping[str, str], *, keep: Container[str] = ()) -> tuple[dict[str, str], bool]:
    """The attributes with their names and values masked as text, but those named in `keep`,
    and whether any was."""
    masked: dict[str, str] = {}
    changed = False
    for name, value in attributes.items():
        if name in keep:
            masked[name] = value
            continue
        new_name, name_masked = mask_text(name)
        new_value, value_masked = mask_text(value)
        masked[new_name] = new_value
        changed = changed or name_masked or value_masked
    return masked, changed
