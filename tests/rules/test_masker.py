"""``Masker`` masks exactly as masking did when it wrote out every form of every value on each
call, in memory linear in the values' size; and the log pump, which builds one masker per
attempt, masks its lines so however the output is cut into frames."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterable
from random import Random

import pytest

from orchestrator.rules.masking import MASK, Masker, mask
from orchestrator.runner.log_pump import LogPump

# Characters that make values overlap, contain each other, need escaping in a regular
# expression, or are not ASCII (so that their damaged forms come into play).
ALPHABET = "ab.*+?()[]\\$^|{}é€😀 \t"


def reference_mask(text: str, secret_values: Iterable[str]) -> str:
    """Masking as it was before ``Masker``: the forms worked out on each call, then replaced
    longest first. Its order among forms of one length was the set's; here it is the text's
    order, as ``Masker`` fixes it (the old order was one of the possible ones, at random)."""
    forms: set[str] = set()
    for value in secret_values:
        for part in (value, *(line for line in value.splitlines() if line.strip())):
            forms.add(part)
            forms.update(
                part[:at] + "\ufffd" * len(char.encode("utf-8", "surrogatepass")) + part[at + 1 :]
                for at, char in enumerate(part)
                if not char.isascii()
            )
    for form in sorted(sorted(forms - {""}), key=len, reverse=True):
        text = text.replace(form, MASK)
    return text


def damaged(value: str, random: Random) -> str:
    """``value`` with one non-ASCII character stored as Docker stores a cut one (if it has one)."""
    places = [at for at, char in enumerate(value) if not char.isascii()]
    if not places:
        return value
    at = random.choice(places)
    return value[:at] + "\ufffd" * len(value[at].encode()) + value[at + 1 :]


def random_values(random: Random) -> list[str]:
    """Zero to four secret values, often overlapping or one inside another, sometimes empty or
    multi-line."""
    values: list[str] = []
    for _ in range(random.randint(0, 4)):
        if values and random.random() < 0.4:
            # A piece of a value already chosen, or one that extends it: prefixes and overlaps.
            other = random.choice(values)
            start = random.randint(0, len(other))
            piece = other[start : random.randint(start, len(other))]
            value = piece + "".join(random.choices(ALPHABET, k=random.randint(0, 3)))
        else:
            value = "".join(random.choices(ALPHABET, k=random.randint(1, 8)))
        if random.random() < 0.15:
            value += "\n" + random.choice(["", "  ", "".join(random.choices(ALPHABET, k=4))])
        values.append(value)
    return values


def random_text(random: Random, values: list[str]) -> str:
    """Text made of random characters, of the values, pieces of them and their damaged forms."""
    parts: list[str] = []
    for _ in range(random.randint(0, 12)):
        roll = random.random()
        if values and roll < 0.3:
            parts.append(random.choice(values))
        elif values and roll < 0.45:
            parts.append(damaged(random.choice(values), random))
        elif values and roll < 0.6:
            value = random.choice(values)
            start = random.randint(0, len(value))
            parts.append(value[start : random.randint(start, len(value))])
        else:
            parts.append("".join(random.choices(ALPHABET + "\n", k=random.randint(0, 6))))
    return "".join(parts)


def test_masks_as_masking_did_on_many_random_inputs() -> None:
    random = Random(20261123)
    found = 0
    for _ in range(3000):
        values = random_values(random)
        masker = Masker(values)
        for _ in range(5):
            text = random_text(random, values)
            expected = reference_mask(text, values)
            assert masker(text) == expected, (values, text)
            assert mask(text, values) == expected, (values, text)
            found += expected != text
    assert found > 3000  # most cases did mask something: the comparison is not a vacuous one


def test_masks_as_masking_did_where_the_text_holds_damaged_forms() -> None:
    # Values of few characters, some of them U+FFFD or '*' (which a mask can make up), and texts
    # full of damaged forms and runs of U+FFFD: the damaged forms' own path, taken at each call.
    random = Random(16)
    alphabet = "ab*é€😀\ufffd\n"
    for _ in range(4000):
        values = ["".join(random.choices(alphabet, k=random.randint(1, 6))) for _ in range(3)]
        parts = []
        for _ in range(random.randint(1, 8)):
            roll = random.random()
            if roll < 0.4:
                parts.append(damaged(random.choice(values), random))
            elif roll < 0.55:
                parts.append(random.choice(values))
            elif roll < 0.65:
                parts.append("\ufffd" * random.randint(2, 5))
            else:
                parts.append("".join(random.choices(alphabet, k=random.randint(0, 4))))
        text = "".join(parts)
        assert Masker(values)(text) == reference_mask(text, values), (values, text)


@pytest.mark.parametrize("char", ["é", "€", "😀"])  # 2, 3 and 4 bytes of UTF-8
def test_memory_stays_linear_in_the_secrets_size(char: str) -> None:
    # Each character of such a value has a damaged form as long as the value: written out, the
    # forms of n characters take n² (64 KiB of "é": 2 GiB). Small sizes first, so a masker that
    # writes them out fails before it takes gigabytes.
    for size in (1024, 8192, 65536):  # bytes of UTF-8
        value = char * (size // len(char.encode()))
        middle = len(value) // 2
        cut = value[:middle] + "\ufffd" * len(char.encode()) + value[middle + 1 :]
        texts = [f"token={value}\n", f"token={cut}\n", "a line with no secret\n"]
        tracemalloc.start()
        try:
            masker = Masker([value])
            masked = [masker(text) for text in texts]
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert masked == ["token=***\n", "token=***\n", "a line with no secret\n"]
        assert peak < 8 * size, (size, peak)


@pytest.mark.parametrize(
    ("values", "text", "masked"),
    [
        ([], "nothing to hide\n", "nothing to hide\n"),
        (["", ""], "empty values mask nothing", "empty values mask nothing"),
        (["abc", "abcdef"], "x abcdef y abc z", "x *** y *** z"),  # the longer whole
        (["abcd", "cdef"], "abcdef", "***ef"),  # overlapping: the first of one length
        (["cdef", "abcd"], "abcdef", "***ef"),  # whatever order they are given in
        (["a.c", "(x)"], "abc a.c (x) x", "abc *** *** x"),  # no pattern: plain text
        (["p\\d+$"], "p123 p\\d+$", "p123 ***"),
        (["pässwörd"], "pässwörd p\ufffd\ufffdsswörd", "*** ***"),  # damaged by Docker's cut
        (["😀x"], "\ufffd\ufffd\ufffd\ufffdx", "***"),  # four bytes: four U+FFFD
        (["KEY\n\nline2\n"], "KEY\n\nline2\n|KEY\nline2\n", "***|***\n***\n"),
        (["KEY\n  \n"], "a  \nKEY\n", "a  \n***\n"),  # a blank line of a value is no secret
    ],
)
def test_masks_known_cases(values: list[str], text: str, masked: str) -> None:
    assert Masker(values)(text) == masked
    assert mask(text, values) == masked
    assert reference_mask(text, values) == masked


def test_masks_the_same_after_many_calls_and_takes_values_once() -> None:
    masker = Masker(value for value in ["one-time", "generator"])
    for _ in range(3):
        assert masker("a one-time generator") == "a *** ***"


def test_leaves_no_form_of_a_value_behind() -> None:
    random = Random(7)
    for _ in range(2000):
        values = [v.replace("*", "") for v in random_values(random)]
        text = random_text(random, values)
        masked = Masker(values)(text)
        for value in values:
            for form in (value, damaged(value, random), *value.splitlines()):
                if form.strip():
                    assert form not in masked, (values, text)


def pumped(values: list[str], output: bytes, random: Random) -> str:
    """What a log pump over ``values`` lets go of ``output`` fed in random pieces (cutting lines
    and UTF-8 characters anywhere), then ended."""
    pump = LogPump(lambda: iter(()), values)
    start = 0
    while start < len(output):
        end = start + random.randint(1, 12)
        pump.feed(output[start:end])
        start = end
    pump.feed(b"", final=True)
    return pump.take()


def test_the_pump_masks_each_line_however_its_frames_cut_it() -> None:
    random = Random(99)
    for _ in range(1500):
        values = [v for v in random_values(random) if "\n" not in v]
        text = random_text(random, values)
        lines = text.splitlines(keepends=True)
        expected = "".join(reference_mask(line, values) for line in lines)
        assert pumped(values, text.encode(), random) == expected, (values, text)


def test_the_pump_masks_a_value_split_across_frames_and_a_multi_line_value_by_line() -> None:
    random = Random(5)
    pem = "-----BEGIN KEY-----\nMIIBOgIBAAJBAK\n-----END KEY-----"
    output = f"token=s3cr3t€\nkey:\n{pem}\nend\n".encode()
    for _ in range(50):
        assert pumped(["s3cr3t€", pem], output, random) == "token=***\nkey:\n***\n***\n***\nend\n"


def test_the_pump_passes_whole_line_frames_through_and_holds_an_open_line() -> None:
    pump = LogPump(lambda: iter(()), ["hunter2"])
    pump.feed(b"first hunter2\n")
    pump.feed(b"second hun")
    assert pump.take() == "first ***\n"
    pump.feed(b"ter2\nthird\n")
    pump.feed(b"last hunter2")
    assert pump.take() == "second ***\nthird\n"
    pump.feed(b"", final=True)
    assert pump.take() == "last ***"
