"""Secret masking: every form of a secret value that can reach a log becomes ``***``."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
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
    """Replaces every known secret form in a line; longest forms first."""

    def __init__(self, secrets: Iterable[str] = ()):
        forms: set[str] = set()
        for value in secrets:
            forms |= secret_forms(value)
        ordered = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self.longest = max((len(f) for f in ordered), default=0)

    def __bool__(self) -> bool:
        return self._pattern is not None

    def safe_cut(self, text: str, cut: int) -> int:
        """``cut``, or an earlier index if a secret form in ``text`` spans it: text split
        there is masked the same piece by piece as whole (the matches of the whole text
        are literals, none crossing the cut)."""
        if self._pattern is not None:
            for found in self._pattern.finditer(text):
                if found.start() >= cut:
                    break
                if found.end() > cut:
                    return found.start()
        return cut

    def mask(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern else text
