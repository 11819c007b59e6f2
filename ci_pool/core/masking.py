"""Secret masking: every form of a secret value that can reach a log becomes ``***``.

Masks only ever grow: a value added later (``::add-mask::``) is masked from then on, and
no mask can shorten another. Where masked forms overlap, the union of all of them is
replaced, so a mask that covers only part of a secret cannot leave the rest showing."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Iterator
from urllib.parse import quote, quote_plus

MASK = "***"
#: Values shorter than this are not masked: masking "1" or "ab" would shred every log.
MIN_SECRET_LEN = 4


def _base64_forms(value: bytes) -> set[str]:
    """Base64 of the value at each of the three alignments it can have inside a longer
    encoded string, trimmed to the characters that do not depend on its neighbours."""
    forms: set[str] = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + value).decode()
        start = {0: 0, 1: 2, 2: 3}[shift]
        tail = (len(value) + shift) % 3
        end = len(encoded) - {0: 0, 1: 3, 2: 2}[tail] if tail else len(encoded)
        core = encoded[start:end].rstrip("=")
        if len(core) >= MIN_SECRET_LEN:
            forms.add(core)
    return forms


def secret_forms(value: str) -> set[str]:
    """Plain, base64 and URL-encoded forms of a secret (each line of a multi-line one)."""
    forms: set[str] = set()
    for part in [value, *value.splitlines()]:
        part = part.strip("\r")
        if len(part) < MIN_SECRET_LEN:
            continue
        forms |= {part, quote(part, safe=""), quote_plus(part), quote(part)}
        forms |= _base64_forms(part.encode())
    return {f for f in forms if len(f) >= MIN_SECRET_LEN}


class Masker:
    """Replaces every known secret form in a line (the union of overlapping ones)."""

    def __init__(self, secrets: Iterable[str] = ()):
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.longest = 0
        for value in secrets:
            self._forms |= secret_forms(value)
        self._compile()

    def _compile(self) -> None:
        ordered = sorted(self._forms, key=len, reverse=True)
        # A lookahead matches at every position, overlapping ones included; longest first,
        # so each position reports the longest form that starts there.
        alternatives = "|".join(map(re.escape, ordered))
        self._pattern = re.compile(f"(?=({alternatives}))") if ordered else None
        self.longest = max((len(f) for f in ordered), default=0)

    def add(self, value: str) -> bool:
        """Mask ``value`` (in all its forms) from now on; False if it is too short to mask."""
        forms = secret_forms(value)
        if not forms:
            return False
        if not forms <= self._forms:
            self._forms |= forms
            self._compile()
        return True

    def __bool__(self) -> bool:
        return self._pattern is not None

    def _spans(self, text: str) -> Iterator[tuple[int, int]]:
        """The merged ranges of ``text`` covered by some secret form, in order."""
        if self._pattern is None:
            return
        start = end = -1
        for found in self._pattern.finditer(text):
            s, e = found.start(), found.start() + len(found.group(1))
            if s >= end:
                if end > start:
                    yield start, end
                start, end = s, e
            else:
                end = max(end, e)
        if end > start:
            yield start, end

    def safe_cut(self, text: str, cut: int) -> int:
        """``cut``, or an earlier index if a masked range of ``text`` spans it: text split
        there is masked the same piece by piece as whole."""
        for start, end in self._spans(text):
            if start >= cut:
                break
            if end > cut:
                return start
        return cut

    def mask(self, text: str) -> str:
        if self._pattern is None:
            return text
        pieces: list[str] = []
        done = 0
        for start, end in self._spans(text):
            pieces += [text[done:start], MASK]
            done = end
        if not pieces:
            return text
        pieces.append(text[done:])
        return "".join(pieces)
