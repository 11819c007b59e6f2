"""Glob patterns of GitHub's filter syntax, matched in time linear in the text.

Branch, tag and path filters (``triggers``), repository and ref allowlists (``policy``)
and token repository limits all match here. The syntax: ``*`` is any run of characters
but ``/``, ``**`` any run at all, ``?``/``+`` after a character or class make it
optional/repeatable, ``[a-z]``/``[!a-z]`` a class, ``\\`` escapes; the whole name must
match.

A pattern is compiled to a row of atoms (one character each, some optional, some
repeatable): an NFA whose states are positions in that row. Matching reads the text once,
carrying the set of live positions as a bit mask, so no pattern can make it backtrack: a
match costs O(len(text)) steps of O(len(pattern)/64) work. Each set of positions met is
numbered and its transitions cached (a lazily built DFA), so most steps are one list index
and one dict lookup; past ``GLOB_CACHED_TRANSITIONS`` states the walk goes on uncached.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import NamedTuple

from ci_pool.defaults import GLOB_CACHED_TRANSITIONS, GLOB_MAX_LENGTH
from ci_pool.exceptions import InputError

#: Characters cached per automaton state (a path uses a few dozen distinct ones).
_ROW_ENTRIES = 128


class _Atom(NamedTuple):
    """One character position: the ranges it accepts (or, negated, refuses)."""

    ranges: tuple[tuple[str, str], ...]
    negate: bool = False
    optional: bool = False
    repeat: bool = False
    #: A star, a quantified atom or a literal ``*?+``: a ``?``/``+`` after it is literal.
    closed: bool = False

    def accepts(self, ch: str) -> bool:
        return any(lo <= ch <= hi for lo, hi in self.ranges) != self.negate


_SLASHLESS = _Atom((("/", "/"),), negate=True, optional=True, repeat=True, closed=True)
_ANYTHING = _Atom((), negate=True, optional=True, repeat=True, closed=True)


def _class_ranges(body: str) -> tuple[tuple[str, str], ...]:
    """``a-z0`` as ranges; ``-`` first or last is itself, a reversed range matches nothing."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            if body[i] <= body[i + 2]:
                out.append((body[i], body[i + 2]))
            i += 3
        else:
            out.append((body[i], body[i]))
            i += 1
    return tuple(out)


def _literal(c: str) -> _Atom:
    return _Atom(((c, c),), closed=c in "*?+")


def _parse(pattern: str) -> list[_Atom]:
    atoms: list[_Atom] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            atoms.append(_literal(pattern[i + 1]))
            i += 2
            continue
        if c == "*":
            double = pattern.startswith("**", i)
            atoms.append(_ANYTHING if double else _SLASHLESS)
            i += 2 if double else 1
            continue
        end = pattern.find("]", i + 2) if c == "[" else -1
        body = pattern[i + 1 : end]
        if c in "?+" and atoms and not atoms[-1].closed:
            atoms[-1] = atoms[-1]._replace(optional=c == "?", repeat=c == "+", closed=True)
        elif end != -1 and body != "!":
            atoms.append(_Atom(_class_ranges(body.removeprefix("!")), body.startswith("!")))
            i = end + 1
            continue
        else:
            atoms.append(_literal(c))
        i += 1
    return atoms


def _optional_runs(atoms: list[_Atom]) -> tuple[int, int, int]:
    """Masks of the runs of optional atoms (each with its landing position: the next atom
    or the accepting position), of their first positions and of their landing positions."""
    runs = first = land = 0
    j = 0
    while j < len(atoms):
        if not atoms[j].optional:
            j += 1
            continue
        start = j
        while j < len(atoms) and atoms[j].optional:
            j += 1
        runs |= (1 << (j + 1)) - (1 << start)
        first |= 1 << start
        land |= 1 << j
    return runs, first, land


class Glob:
    """One compiled pattern; ``match`` may be called from several threads at once."""

    def __init__(self, pattern: str):
        check_glob(pattern, "pattern")
        atoms = _parse(pattern)
        self._runs, self._first, self._land = _optional_runs(atoms)
        self._repeat = sum(1 << j for j, a in enumerate(atoms) if a.repeat)
        self._accept = 1 << len(atoms)
        # Which positions a character lights: stars and literals by table, classes by test.
        self._anything = sum(1 << j for j, a in enumerate(atoms) if a is _ANYTHING)
        self._slashless = sum(1 << j for j, a in enumerate(atoms) if a is _SLASHLESS)
        self._literals: dict[str, int] = {}
        self._classes: list[tuple[int, _Atom]] = []
        for j, atom in enumerate(atoms):
            if atom is _ANYTHING or atom is _SLASHLESS:
                continue
            (lo, hi), *more = atom.ranges or (("", "!"),)
            if not atom.negate and not more and lo == hi:
                self._literals[lo] = self._literals.get(lo, 0) | 1 << j
            else:
                self._classes.append((1 << j, atom))
        self._lit: dict[str, int] = {}
        self._lock = threading.Lock()
        self._ids: dict[int, int] = {}
        self._masks: list[int] = []
        self._rows: list[dict[str, int]] = []
        self._intern(0)  # id 0: dead, nothing can match any more
        self._start = self._intern(self._close(1))

    def _close(self, live: int) -> int:
        """Add the positions reached by skipping optional atoms, every run at once: the
        borrow of ``- first`` stops at a run's lowest live position k (or at its landing
        bit when nothing in it is live), and the XOR lights k+1 up to the landing bit."""
        marked = live | self._land
        return live | (self._runs & (~(marked - self._first) ^ marked))

    def _lights(self, ch: str) -> int:
        """The positions whose atom accepts ``ch``."""
        mask = self._lit.get(ch)
        if mask is None:
            mask = self._anything | self._literals.get(ch, 0)
            if ch != "/":
                mask |= self._slashless
            for bit, atom in self._classes:
                if atom.accepts(ch):
                    mask |= bit
            if len(self._lit) < _ROW_ENTRIES:
                self._lit[ch] = mask
        return mask

    def _step(self, live: int, ch: str) -> int:
        took = live & self._lights(ch)
        return self._close((took << 1) | (took & self._repeat))

    def _intern(self, mask: int) -> int:
        with self._lock:
            known = self._ids.get(mask)
            if known is None:
                known = len(self._masks)
                self._masks.append(mask)
                self._rows.append({})
                self._ids[mask] = known
            return known

    def match(self, text: str) -> bool:
        """Whether the whole of ``text`` matches; one pass, no backtracking."""
        rows = self._rows
        state = self._start
        for i, ch in enumerate(text):
            after = rows[state].get(ch)
            if after is None:
                mask = self._step(self._masks[state], ch)
                if len(self._masks) >= GLOB_CACHED_TRANSITIONS and mask not in self._ids:
                    return self._walk(mask, text, i + 1)
                after = self._intern(mask)
                if len(rows[state]) < _ROW_ENTRIES:
                    rows[state][ch] = after
            if not after:
                return False
            state = after
        return bool(self._masks[state] & self._accept)

    def _walk(self, live: int, text: str, start: int) -> bool:
        """The rest of a match without the cache (still one pass)."""
        for ch in text[start:]:
            if not live:
                return False
            live = self._step(live, ch)
        return bool(live & self._accept)


@lru_cache(maxsize=256)
def compile_glob(pattern: str) -> Glob:
    return Glob(pattern)


def glob_match(pattern: str, name: str) -> bool:
    """Whether ``name`` matches ``pattern`` in full (InputError for a pattern too long)."""
    return compile_glob(pattern).match(name)


def check_glob(pattern: str, field: str) -> str:
    """A pattern a setting or request may hold: not too long (InputError naming ``field``)."""
    if len(pattern) > GLOB_MAX_LENGTH:
        raise InputError(
            f"pattern {pattern[:40]!r}... is {len(pattern)} characters long; at most "
            f"{GLOB_MAX_LENGTH} are accepted",
            field=field,
        )
    return pattern
