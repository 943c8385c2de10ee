"""Masking secret values in what jobs produce, and URLs with their userinfo scrubbed.

Pure text work: the values come from the secret box (``storage.secret_box``), which decrypts
them; nothing here stores or logs a value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import cmp_to_key
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# A shorter secret value cannot be masked without revealing it: every occurrence of its few
# characters in a log or an error would become ***, garbling the text and showing the value.
MIN_SECRET_CHARS = 4


# A damaged character: Docker's json-file log driver stores each byte of a character it cut as
# U+FFFD, so a damaged form holds two to four of them in a row, and a text without two cannot
# hold one. Masking never adds a U+FFFD, so it cannot make such a run either.
_CUT = "\ufffd"
# Characters by their UTF-8 length (lone surrogates, which ``surrogatepass`` encodes, take 3).
_WIDTH = {
    2: re.compile("[\u0080-\u07ff]"),
    3: re.compile("[\u0800-\uffff]"),
    4: re.compile("[\U00010000-\U0010ffff]"),
}

# A form to mask: a part of a value (the value, or a non-blank line of it), whole or with the
# character at ``at`` damaged into ``width`` U+FFFD. Damaged forms stay descriptions until
# used: written out, the forms of a value of n non-ASCII characters would take n² characters.
_Form = tuple[str, int, int]  # (part, at, width); at == -1: the part whole


def _text(form: _Form) -> str:
    part, at, width = form
    return part if at < 0 else part[:at] + _CUT * width + part[at + 1 :]


def _length(form: _Form) -> int:
    part, at, width = form
    return len(part) if at < 0 else len(part) + width - 1


def _compare(one: _Form, other: _Form) -> int:
    """The order forms are masked in: longest first, then by their text."""
    if _length(one) != _length(other):
        return -1 if _length(one) > _length(other) else 1
    if one[0] is other[0] and one[1] >= 0 and other[1] >= 0:
        # One part damaged in two places: the texts first differ at the first of the two,
        # where one holds U+FFFD and the other the part's character (unless that is U+FFFD).
        first = min(one[1], other[1])
        if one[1] == other[1]:
            return 0
        if one[0][first] != _CUT:
            damaged_first = _CUT < one[0][first]
            return -1 if (one[1] == first) == damaged_first else 1
    a, b = _text(one), _text(other)
    return (a > b) - (a < b)


_ORDER = cmp_to_key(_compare)


def _damaged_in(part: str, text: str) -> Iterator[_Form]:
    """The damaged forms of ``part`` that masking ``text`` may come upon.

    Masking only ever puts ``***`` in the place of a text it removes, so where a form shows up
    at some step, its stretch without ``*`` around the damage (all of it, for a part without
    ``*``) was in ``text`` from the start, at a run of U+FFFD. Looked for around each such run.
    """
    size, starred = len(part), "*" in part
    for width, chars in _WIDTH.items():
        run = _CUT * width
        at_run = text.find(run)
        while at_run >= 0:
            after_run = len(text) - at_run - width
            # Without a '*' the whole form must fit around the run: only these places can.
            low = 0 if starred else max(0, size - 1 - after_run)
            high = size - 1 if starred else min(at_run, size - 1)
            for match in chars.finditer(part, low):
                at = match.start()
                if at > high:
                    break
                start = part.rfind("*", 0, at) + 1 if starred else 0
                end = part.find("*", at + 1) if starred else -1
                end = size if end < 0 else end
                before, after = at - start, end - at - 1
                if (
                    before <= at_run
                    and after <= after_run
                    and (before == 0 or part[at - 1] == text[at_run - 1])  # cheap test first
                    and text.startswith(part[start:at], at_run - before)
                    and text.startswith(part[at + 1 : end], at_run + width)
                ):
                    yield part, at, width
            at_run = text.find(run, at_run + 1)


class Masker:
    """Replaces every occurrence of some secret values in a text by ``***``; built once for a
    set of values (a job's), then called on each piece of its output.

    Two more forms of a value are masked, as logs may carry it so. Each line of a multi-line
    value (a PEM key): logs are masked a line at a time, so its lines may arrive apart (blank
    lines are no secret and are left alone). And the value (or line) with one non-ASCII
    character damaged: Docker's json-file log driver cuts a long line every 16 KiB, even inside
    a character, and stores each byte of the cut character as U+FFFD.

    Forms are replaced one after the other, longest first (a value that contains another is
    masked whole), ties by their text (the same text is always masked the same way). Memory
    and time are linear in the values' size: a damaged form is written out only for a text
    that holds U+FFFD where that form could be (see ``_damaged_in``).
    """

    __slots__ = ("_damageable", "_forms")

    def __init__(self, secret_values: Iterable[str]) -> None:
        """A masker of ``secret_values`` (empty ones mask nothing)."""
        parts: set[str] = set()
        for value in secret_values:
            parts.add(value)
            parts.update(line for line in value.splitlines() if line.strip())
        parts.discard("")
        self._forms = tuple(sorted(parts, key=lambda part: (-len(part), part)))
        self._damageable = tuple(part for part in self._forms if not part.isascii())

    def __call__(self, text: str) -> str:
        """``text`` with every form of every value replaced by ``***``."""
        if self._damageable and _CUT * 2 in text:
            damaged = [form for part in self._damageable for form in _damaged_in(part, text)]
            if damaged:
                return self._mask_with(text, damaged)
        forms = self._forms
        for first, form in enumerate(forms):
            if form in text:
                # The forms before this one are not in ``text``, and nothing was replaced yet.
                for later in forms[first:]:
                    text = text.replace(later, MASK)
                return text
        return text

    def _mask_with(self, text: str, damaged: list[_Form]) -> str:
        """``text`` masked of the whole parts and of ``damaged``, in order, each written out
        only when its turn comes (a form equal to the one before is masked once)."""
        forms = sorted([*((part, -1, 0) for part in self._forms), *damaged], key=_ORDER)
        previous = None
        for form in forms:
            pattern = _text(form)
            if pattern != previous:
                text = text.replace(pattern, MASK)
            previous = pattern
        return text


def mask(text: str, secret_values: Iterable[str]) -> str:
    """``text`` with every occurrence of a secret value replaced by ``***`` (see ``Masker``;
    for a one-off text: a masker used many times saves working out the values' forms)."""
    return Masker(secret_values)(text)


def public_url(url: str) -> str:
    """``url`` with its userinfo (which may hold a password) masked."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{MASK}@{host}"))


def userinfo_of(url: str) -> str | None:
    """The userinfo of ``url`` (``user:password``, as written: percent-encoded); None without."""
    userinfo, at, _ = urlsplit(url).netloc.rpartition("@")
    return userinfo if at and userinfo else None


def with_userinfo(url: str, userinfo: str | None) -> str:
    """``url`` with its userinfo replaced by ``userinfo`` (None: removed); the rest exactly as
    written."""
    netloc = urlsplit(url).netloc
    host = netloc.rpartition("@")[2]
    return url.replace(f"//{netloc}", f"//{userinfo}@{host}" if userinfo else f"//{host}", 1)


# scheme://userinfo@: the userinfo runs to the last "@" before the end of the authority ("/",
# "?", "#" or white space), as urlsplit reads it, so a password holding "@" is masked whole.
_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#\s]*@")


def mask_userinfo(text: str) -> str:
    """``text`` with the userinfo of every URL in it replaced by ``***``."""
    if "@" not in text or "://" not in text:
        return text
    return _USERINFO.sub(rf"\g<1>{MASK}@", text)
