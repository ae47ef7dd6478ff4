"""Card numbers never reach a dead letter: the masking fuzzed against an oracle of its own.

The oracle reads the masked output the way a person does and owes nothing to the code under test:
no regular expression, no separator list (any character that is neither a letter nor a number
separates), its own Luhn check (`test_mockdata.luhn_valid`); it shares with the code only the
policy's two numbers (13 to 19 digits, at most three separators between two digits). The
strategies write card numbers in every form a person still reads as one: grouped any way, groups
apart by dots, several spaces, tabs, slashes, underscores, no-break spaces or Unicode dashes,
digits of any script (full-width included), inside JSON strings, names and numbers, in the ids
of a message that is not valid, in attribute names and values, behind extra digits.
"""

from __future__ import annotations

import json
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from ecom_pipeline.redaction import mask_attributes, mask_card_numbers, mask_message
from tests.unit.test_mockdata import luhn_valid

MASK = "*"
# The policy's two numbers: a card number has 13 to 19 digits, and digits at most three
# separators apart are one number to a reader (further apart, they are two numbers).
SHORTEST, LONGEST, WIDEST_GAP = 13, 19, 3


def _letter_or_number(character: str) -> bool:
    return unicodedata.category(character)[0] in "LN"


def visible_card_numbers(text: str) -> list[str]:
    """Every card number a reader can still read in `text`: a Luhn-valid window of 13 to 19
    digits, none of them masked.

    Each Unicode decimal digit is read as its value. Every other character that is neither a
    letter nor a number (Unicode categories L and N) is a separator and dropped, but where more
    than WIDEST_GAP of them stand between two digits, the digits belong to two numbers (without
    that cut the oracle would join a card's last four to the next number in the text and report
    windows no reader sees). A letter, any other number character (a superscript, a fraction) or
    a mask (`*`, a digit that was hidden) ends the digits read so far.

    Limits: `*` is taken for a masked digit, so a card written with `*` between its digits is
    not seen here (test_redaction.py checks that form). It checks that no whole card number is
    left, not how much of a masked one is shown (test_card_digits_but_the_last_four_are_masked
    does). It reads text as it is: JSON must be decoded first (`json_as_read`), else the hex
    digits of an escape such as `\u0018` would count as digits and an escaped digit would not.
    """
    numbers: list[str] = []
    digits = ""
    gap = 0
    for character in text:
        value = unicodedata.decimal(character, None)
        if value is not None:
            if gap > WIDEST_GAP:
                numbers.append(digits)
                digits = ""
            digits += str(value)
            gap = 0
        elif character == MASK or _letter_or_number(character):
            numbers.append(digits)
            digits, gap = "", 0
        else:
            gap += 1
    numbers.append(digits)
    return [
        number[start : start + length]
        for number in numbers
        for length in range(SHORTEST, LONGEST + 1)
        for start in range(len(number) - length + 1)
        if luhn_valid(number[start : start + length])
    ]


class _Pairs(list[tuple[str, object]]):
    """A JSON object as a reader sees it: every pair, repeated names included."""


class _NumberText(str):
    """A JSON number as written."""


def _as_read(value: object) -> str:
    if isinstance(value, _Pairs):
        return "{" + ",".join(f'"{name}":{_as_read(item)}' for name, item in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_as_read(item) for item in value) + "]"
    if isinstance(value, _NumberText):
        return str(value)
    if isinstance(value, str):
        return f'"{value}"'
    return {True: "true", False: "false", None: "null"}[value]  # type: ignore[index]


def json_as_read(data: bytes) -> str:
    """JSON data as a tool shows it to a person: compact, strings decoded (escapes read)."""
    number = _NumberText
    document = json.loads(data, object_pairs_hook=_Pairs, parse_int=number, parse_float=number, parse_constant=number)
    return _as_read(document)


# --- what the strategies write ------------------------------------------------------------------

# The zero of some scripts' decimal digits: ASCII, full-width, Arabic-Indic, Extended
# Arabic-Indic, Devanagari, Bengali, Thai, Myanmar, mathematical bold and monospace.
ZEROS = [0x30, 0xFF10, 0x660, 0x6F0, 0x966, 0x9E6, 0xE50, 0x1040, 0x1D7CE, 0x1D7F6]
NAMED_SEPARATORS = [
    " ",
    ".",
    "/",
    "_",
    "\t",
    "\n",
    ",",
    ":",
    "|",
    "\u00a0",  # no-break space
    "\u202f",  # narrow no-break space
    "\u3000",  # ideographic space
    "\u200b",  # zero-width space
    "-",
    "\u2010",  # hyphen
    "\u2011",  # non-breaking hyphen
    "\u2012",  # figure dash
    "\u2013",  # en dash
    "\u2014",  # em dash
    "\u2212",  # minus sign
    "\ufe63",  # small hyphen-minus
    "\uff0d",  # full-width hyphen-minus
]
separator_characters = st.sampled_from(NAMED_SEPARATORS) | st.characters(
    exclude_categories=("L", "N", "Cs"), exclude_characters="*\\"
)
separators = st.text(separator_characters, min_size=1, max_size=WIDEST_GAP)
# Text around the numbers: anything but a backslash (so that the masked text lines up with
# the original character by character) or a surrogate (not text).
noise = st.text(st.characters(codec="utf-8", exclude_characters="\\"), max_size=12)


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    """A Luhn-valid number of 13 to 19 ASCII digits."""
    body = draw(st.text("0123456789", min_size=SHORTEST - 1, max_size=LONGEST - 1))
    check = next(digit for digit in "0123456789" if luhn_valid(body + digit))
    return body + check


@st.composite
def written_cards(draw: st.DrawFn) -> tuple[str, list[int]]:
    """A card number as someone may write it, and where its digits are in that text."""
    card = draw(card_numbers())
    zero = draw(st.sampled_from(ZEROS))
    mixed_scripts = draw(st.booleans())
    same_separator = draw(st.booleans())
    separator = draw(separators)
    text = ""
    positions: list[int] = []
    position = 0
    while position < len(card):
        size = draw(st.sampled_from([4, 4, 4, 1, 2, 3, 5, 6]))
        if text:
            text += separator if same_separator else draw(separators)
        for digit in card[position : position + size]:
            if mixed_scripts:
                zero = draw(st.sampled_from(ZEROS))
            positions.append(len(text))
            text += chr(zero + int(digit))
        position += size
    return text, positions


@st.composite
def texts_with_cards(draw: st.DrawFn) -> tuple[str, list[list[int]]]:
    """Noise and cards, and where each card's digits are."""
    text = draw(noise)
    cards: list[list[int]] = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        if draw(st.booleans()):  # right after the noise, or set apart from it
            text += draw(separators)
        card, positions = draw(written_cards())
        cards.append([len(text) + p for p in positions])
        text += card + draw(noise)
    return text, cards


@st.composite
def json_numbers(draw: st.DrawFn) -> str:
    """A card number as the text of a JSON number: whole, negative, or with a fraction."""
    card = draw(card_numbers())
    split = draw(st.integers(min_value=1, max_value=len(card) - 1))
    return draw(st.sampled_from([str(int(card)), f"-{int(card)}", f"{int(card[:split])}.{card[split:]}"]))


@st.composite
def json_dead_letters(draw: st.DrawFn) -> bytes:
    """A JSON message with card numbers in its ids, numbers, strings, arrays and names, written
    with or without escapes and spaces."""
    numbers: list[str] = []

    def number() -> str:  # a placeholder, replaced by the number's text once dumped
        numbers.append(draw(json_numbers()))
        return f"@{len(numbers) - 1}@"

    def card_text() -> str:
        return draw(texts_with_cards())[0]

    fields: list[tuple[str, object]] = [
        ("payment_id", number()),
        ("order_id", number()),
        ("customer_id", number()),
        ("note", card_text()),
        ("amount", number()),
    ]
    groups = [
        int(draw(st.text("123456789", min_size=1, max_size=1)) + g)
        for g in draw(st.lists(st.text("0123456789", min_size=3, max_size=3), min_size=4, max_size=5))
    ]
    fields.append(("groups", groups))  # [4111, 1111, ...]: one number to a reader
    fields.append((card_text(), draw(st.sampled_from([1, "x", None]))))  # a card as a name
    fields.append(("nested", {"list": [card_text(), number()], "order_id": number()}))
    chosen = draw(st.lists(st.sampled_from(fields), min_size=1, max_size=len(fields), unique_by=lambda f: f[0]))
    indent = draw(st.sampled_from([None, 1]))
    data = json.dumps(dict(chosen), ensure_ascii=draw(st.booleans()), indent=indent)
    for index, text in enumerate(numbers):
        data = data.replace(f'"@{index}@"', text)
    return data.encode("utf-8", "surrogatepass")


# --- the properties -----------------------------------------------------------------------------


@settings(deadline=None, max_examples=400)
@given(case=texts_with_cards())
def test_no_card_number_written_any_way_survives_in_text(case):
    text, _ = case
    masked, _ = mask_card_numbers(text.encode())
    assert visible_card_numbers(masked.decode()) == []


@settings(deadline=None, max_examples=300)
@given(case=texts_with_cards())
def test_card_digits_but_the_last_four_are_masked(case):
    text, cards = case
    masked = mask_card_numbers(text.encode())[0].decode()
    assert len(masked) == len(text)  # only digits changed, character for character
    for positions in cards:
        assert [masked[p] for p in positions[:-4]] == [MASK] * (len(positions) - 4), (text, masked)


@settings(deadline=None, max_examples=300)
@given(
    text=st.text(st.characters(exclude_characters="\\"), max_size=120)
    | st.text("0123456789 .-/\t\u00a0x", max_size=120)
)
def test_no_card_number_survives_in_any_text(text):  # without escapes, which the oracle does not read
    masked, changed = mask_card_numbers(text.encode("utf-8", "surrogatepass"))
    shown = masked.decode("utf-8", "surrogatepass")
    assert visible_card_numbers(shown) == []
    assert changed == (masked != text.encode("utf-8", "surrogatepass"))


@settings(deadline=None, max_examples=200)
@given(data=st.binary(max_size=200))
def test_no_card_number_survives_in_any_bytes(data):
    masked, _ = mask_card_numbers(data)
    assert visible_card_numbers(masked.decode("utf-8", "surrogateescape")) == []


@settings(deadline=None, max_examples=400)
@given(data=json_dead_letters())
def test_no_card_number_survives_in_a_json_dead_letter_of_an_invalid_message(data):
    # As a reader's tool shows it. (Not its raw text: the hex digits of an escape such as
    # `\u0018` are no digits to a reader, but would be to this oracle.)
    masked, _ = mask_message(data)
    assert visible_card_numbers(json_as_read(masked)) == [], masked


@settings(deadline=None, max_examples=300)
@given(names=st.lists(texts_with_cards(), max_size=3), values=st.lists(texts_with_cards(), min_size=1, max_size=3))
def test_no_card_number_survives_in_the_attributes(names, values):
    attributes = {f"note{i}": text for i, (text, _) in enumerate(values)} | {text: "v" for text, _ in names}
    masked, _ = mask_attributes(attributes)
    assert [text for pair in masked.items() for text in pair if visible_card_numbers(text)] == []
