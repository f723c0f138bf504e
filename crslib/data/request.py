"""What a chat message asks for, as a filter over the catalog (issue 22, beyond the paper).

A person asking for "a scary movie from the 80s, but no slasher" states constraints a list can
be checked against. :func:`parse` reads three kinds from a message:

* **genres wanted** and **genres not wanted** — :func:`crslib.data.genres.genres_in` (the catalog's
  genre names and everyday words; a genre negated in its clause, "no horror", "I don't like
  horror at all", is refused, not asked);
* **years** — a decade ("the 80s", "1980s", "eighties", "'90s"), a year bound ("before 2000",
  "after 2010", "since 2015"), a single year ("from 1994"), "recent"/"new"/"latest" (the last
  :data:`RECENT_YEARS` years of the catalog) or "old"/"classic" (before :data:`OLD_BEFORE`).

:func:`satisfies` tells whether an item meets a request; an item without genres cannot show it
has a wanted genre, and without a year it cannot show it is in a year range, so it does not
satisfy such a request (reported by :func:`coverage`, the catalog's missing metadata).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from crslib.data import Catalog, genres as genres_mod

RECENT_YEARS = 5
OLD_BEFORE = 1990
_WORD_DECADES = {"twenties": 1920, "thirties": 1930, "forties": 1940, "fifties": 1950,
                 "sixties": 1960, "seventies": 1970, "eighties": 1980, "nineties": 1990}


@dataclass(frozen=True)
class Request:
    wanted: frozenset[str] = frozenset()      # genres: an item carries one of them
    unwanted: frozenset[str] = frozenset()    # genres: an item carries none of them
    years: tuple[int, int] | None = None      # inclusive range

    def __bool__(self) -> bool:
        return bool(self.wanted or self.unwanted or self.years)

    def describe(self) -> str:
        """In words, for the chat: 'horror, from 1980 to 1989, not musical'."""
        parts = []
        if self.wanted:
            parts.append(" or ".join(sorted(self.wanted)))
        if self.years:
            lo, hi = self.years
            parts.append(f"from {lo}" if hi >= 9999 else f"before {hi + 1}" if lo <= 0
                         else f"from {lo} to {hi}")
        if self.unwanted:
            parts.append("not " + " or ".join(sorted(self.unwanted)))
        return ", ".join(parts)


def years_in(text: str, latest: int) -> tuple[int, int] | None:
    """The year range ``text`` asks for (module docstring), or None; ``latest``: the newest
    year of the catalog (what "recent" is relative to)."""
    t = genres_mod.plain_text(text).lower()
    m = re.search(r"(?<!\w)(?:(1[89]|20)(\d)0|'?([0-9])0)'?s(?!\w)", t)
    if m:
        start = int(m.group(1) + m.group(2) + "0") if m.group(1) else (
            1900 + int(m.group(3)) * 10 if int(m.group(3)) >= 2 else 2000 + int(m.group(3)) * 10)
        return (start, start + 9)
    for word, start in _WORD_DECADES.items():
        if re.search(rf"\b{word}\b", t):
            return (start, start + 9)
    m = re.search(r"\b(before|after|since|from|in)\s+((?:19|20)\d\d)\b", t)
    if m:
        year = int(m.group(2))
        return {"before": (0, year - 1), "after": (year + 1, 9999),
                "since": (year, 9999)}.get(m.group(1), (year, year))
    if re.search(r"\b(recent|newer|new ones?|latest|this year|last year)\b", t):
        return (latest - RECENT_YEARS + 1, 9999)
    if re.search(r"\b(old|older|classic|classics|oldie)\b", t):
        return (0, OLD_BEFORE - 1)
    return None


def parse(text: str, catalog: Catalog, vocab: dict[str, str] | None = None) -> Request:
    """The :class:`Request` of a message (empty when it asks for nothing checkable)."""
    vocab = genres_mod.vocabulary(catalog) if vocab is None else vocab
    wanted, unwanted = genres_mod.genres_in(text, vocab)
    return Request(wanted, unwanted, years_in(text, latest_year(catalog)))


def latest_year(catalog: Catalog) -> int:
    years = [int(it.year) for it in catalog if str(it.year).isdigit()]
    return max(years) if years else 9999


def satisfies(catalog: Catalog, item_id: str, request: Request) -> bool:
    """Does the item meet every part of ``request``? (Unknown genres or year: not shown.)"""
    it = catalog[item_id]
    have = {g.lower() for g in it.genres}
    if request.wanted and not have & request.wanted:
        return False
    if request.unwanted and have & request.unwanted:
        return False
    if request.years:
        if not str(it.year).isdigit():
            return False
        lo, hi = request.years
        if not lo <= int(it.year) <= hi:
            return False
    return True


def allowed(catalog: Catalog, request: Request) -> list[str]:
    """Every catalog item that satisfies ``request``, in catalog order."""
    return [it.id for it in catalog if satisfies(catalog, it.id, request)]


def coverage(catalog: Catalog) -> dict:
    """How much of the catalog a filter can judge: items without genres, without a year."""
    n = len(catalog)
    no_genre = sum(not it.genres for it in catalog)
    no_year = sum(not str(it.year).isdigit() for it in catalog)
    return {"items": n, "no_genres": no_genre, "no_year": no_year,
            "no_genres_share": no_genre / n if n else 0.0,
            "no_year_share": no_year / n if n else 0.0}
