"""Person names: one normal form, and the reasons a name is refused.

A name is a label in every model, every answer and every page, so it is normalised once
(Unicode NFC, surrounding white space trimmed) and refused when it would mislead: empty,
the reserved ``unknown`` label, control or format characters (newlines, ANSI escapes, bidi
overrides that reorder what a reader sees), longer than ``MAX_NAME_LENGTH``, ``.`` and
``..`` (a browser resolves ``/people/../forget`` to ``/forget``), a name with no visible
character (U+3164 Hangul filler, U+2800 braille blank: a blank name on every page), or the
same person as another name once case and normalisation are ignored (``Madonna``/``madonna``,
``José`` in NFC and NFD). Beside an existing person, a name that merely looks like theirs is
refused too: two names whose confusable skeletons (Unicode TS #39, ICU's SpoofChecker) are
equal in either case, such as Cyrillic ``Маdonna`` beside ``madonna``.
"""
from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable

import icu

from datastructure.errors import NameNotValid

UNKNOWN = "unknown"  # the label of a face nobody matches (datastructure.classifier.UNKNOWN)
MAX_NAME_LENGTH = 100
# Cf holds the bidi controls (U+202A-U+202E, U+2066-U+2069), zero-width characters and the
# BOM; Cc the C0/C1 controls (newline, ESC of ANSI sequences). Both are refused; a name is text.
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
DOT_SEGMENTS = frozenset({".", ".."})  # path segments a URL resolves away
# What draws nothing: white space, default-ignorable characters (U+3164 Hangul filler,
# U+115F, U+FFA0, variation selectors), marks alone, and the blank braille pattern U+2800
# (a graphic character, so in no Unicode property of blanks).
INVISIBLE = icu.UnicodeSet(r"[[:White_Space:][:Default_Ignorable_Code_Point:][:M:]\u2800]")
_SPOOF = icu.SpoofChecker()


def person_name(raw: str) -> str:
    """Return ``raw`` in the one form a name is stored in: NFC, surrounding spaces trimmed."""
    return unicodedata.normalize("NFC", str(raw)).strip()


def name_key(name: str) -> str:
    """Return the key two names collide on: normalised, case-folded (``Madonna`` = ``madonna``)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFKD", person_name(name)).casefold())


@functools.lru_cache(maxsize=1 << 16)
def skeletons(name: str) -> frozenset[str]:
    """Return the confusable skeletons (Unicode TS #39) of a name's key in lower and upper case:
    skeletons are case-sensitive (Cyrillic ``М`` is confusable with ``M``, its ``м`` with no
    ``m``), and two names are one person whatever their case."""
    key = name_key(name)
    return frozenset(_SPOOF.getSkeleton(0, form) for form in (key, key.upper()))


class Lookalikes:
    """The skeletons of a set of names, to find the one a new name looks like in one lookup
    (a gallery of 10^5 people takes seconds to skeletonise: its owner keeps this, see
    utils/people.py)."""

    def __init__(self, names: Iterable[str] = ()):
        self.by_skeleton: dict[str, list[str]] = {}
        for name in names:
            self.add(name)

    def add(self, name: str) -> None:
        for skeleton in skeletons(name):
            self.by_skeleton.setdefault(skeleton, []).append(name)

    def of(self, name: str) -> str | None:
        """The first name, of another person (a different key), whose skeleton is ``name``'s; or None."""
        key = name_key(name)
        return next((other for skeleton in skeletons(name) for other in self.by_skeleton.get(skeleton, ())
                     if name_key(other) != key), None)


def lookalike(name: str, others: Iterable[str]) -> str | None:
    """Return the first of ``others`` (names of other people: a different key) whose skeleton
    equals ``name``'s, or None."""
    return Lookalikes(others).of(name)


def checked_new_name(raw: str, others: "Iterable[str] | Lookalikes") -> str:
    """``checked_name``, also refused (NameNotValid) when it looks like one of ``others``."""
    name = checked_name(raw)
    twin = (others if isinstance(others, Lookalikes) else Lookalikes(others)).of(name)
    if twin is not None:
        problem = f"the name looks like {shown(twin)!r}, the name of another person"
        raise NameNotValid(f"the name {shown(raw)!r} cannot be used: {problem}", {"name": shown(raw), "problems": [problem]})
    return name


def name_problems(name: str) -> list[str]:
    """Return why ``name`` (already normalised by ``person_name``) cannot name a person; [] if it can."""
    problems = []
    if not name:
        problems.append("the name is empty")
    if name_key(name) == UNKNOWN:
        problems.append(f"{UNKNOWN!r} is reserved for faces nobody matches")
    bad = sorted({f"U+{ord(char):04X}" for char in name if unicodedata.category(char) in REFUSED_CATEGORIES})
    if bad:
        problems.append(f"the name holds control or invisible formatting characters ({', '.join(bad[:5])})")
    if name in DOT_SEGMENTS:
        problems.append("'.' and '..' are path segments: a browser would resolve the person's URLs away")
    if name and not bad and all(INVISIBLE.contains(char) for char in name):
        problems.append("the name has no visible character")
    if "/" in name or "\\" in name:
        problems.append("the name holds a slash, which paths and URLs would split")
    if len(name) > MAX_NAME_LENGTH:
        problems.append(f"the name has {len(name)} characters; the limit is {MAX_NAME_LENGTH}")
    return problems


def shown(raw: str, limit: int = 40) -> str:
    """Return a name safe to echo in an answer: escaped, and cut to ``limit`` characters."""
    text = repr(str(raw))[1:-1]
    return text if len(text) <= limit else text[:limit] + "..."


def checked_name(raw: str) -> str:
    """Return the normal form of ``raw``; NameNotValid (422) with the reasons when it is refused."""
    name = person_name(raw)
    problems = name_problems(name)
    if problems:
        raise NameNotValid(f"the name {shown(raw)!r} cannot be used: {'; '.join(problems)}",
                           {"name": shown(raw), "problems": problems})
    return name


def names_problems(raw_names: Iterable[str]) -> dict[str, list[str]]:
    """Return, for each raw name of a set that has a problem, its problems, collisions included.

    Two raw names whose normal forms differ but whose keys match are one person spelled
    twice: both are reported, so the user renames one of them.
    """
    problems: dict[str, list[str]] = {}
    by_key: dict[str, list[str]] = {}
    for raw in dict.fromkeys(raw_names):
        name = person_name(raw)
        found = name_problems(name)
        if found:
            problems[raw] = found
        by_key.setdefault(name_key(name), []).append(raw)
    by_skeleton: dict[str, set[str]] = {}  # skeleton -> keys (people) having it
    for key, spellings in by_key.items():
        if len(spellings) > 1:
            for raw in spellings:
                others = ", ".join(repr(shown(other)) for other in spellings if other != raw)
                problems.setdefault(raw, []).append(f"the same person as {others} once case and accents' encoding are ignored")
        for skeleton in skeletons(spellings[0]):
            by_skeleton.setdefault(skeleton, set()).add(key)
    for keys in by_skeleton.values():
        if len(keys) > 1:
            for key in keys:
                others = ", ".join(repr(shown(by_key[other][0])) for other in sorted(keys - {key}))
                for raw in by_key[key]:
                    reason = f"looks like {others}, the name of another person"
                    if reason not in problems.get(raw, []):
                        problems.setdefault(raw, []).append(reason)
    return problems
