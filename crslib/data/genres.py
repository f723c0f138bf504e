"""Genres a user asks for, and whether a top-k list follows them (a check beyond the paper).

The paper scores a recommendation by its gold item only. A person talking to the model also
notices whether the items match what they asked for: "What about a scary one?" answered with a
superhero film is a miss whatever the gold item was. This module measures that.

* The genres a message asks for (:func:`asked_genres`) are the catalog's own genre names
  (ReDial's ``id2info.json``, INSPIRED's movie database), matched as whole words, case
  ignored, plus the everyday words and plurals of :data:`WORDS` ("scary" -> horror, "comedies"
  -> comedy). :data:`NOT_ASKED` genres are never matched: their names are ordinary words
  ("short", "news", "music") far more often than requests. ``@<id>`` mentions and token
  look-alikes (``<BOI>`` ...) are not words, so a title never asks for a genre.
* A genre the message negates is not asked for but refused (:func:`genres_in`): a cue of
  :data:`NEGATIONS` earlier in the same clause, within six words ("no horror", "I don't like
  horror at all", "nothing scary", "anything but musicals"); a clause ends at punctuation or at
  "but" ("no horror but a comedy" asks for comedy).
* :func:`following` is, over the cases that ask for at least one genre, the mean share of the
  top-``k`` items that carry one of the asked genres (an item without genres carries none).
  Computed for the gold items too (``k`` = 1), it says how often the dataset's own answer
  follows the asked genre: the ceiling a ranker can be compared with.
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

from crslib.data import Catalog

# everyday words and plurals for a catalog genre (lower case); each maps to a catalog genre name
WORDS = {
    "scary": "horror", "spooky": "horror", "creepy": "horror", "frightening": "horror",
    "horrors": "horror",
    "funny": "comedy", "hilarious": "comedy", "comedies": "comedy", "comedic": "comedy",
    "romantic": "romance", "romances": "romance", "rom-com": "romance",
    "animated": "animation", "cartoon": "animation", "cartoons": "animation",
    "thrillers": "thriller", "dramas": "drama", "dramatic": "drama",
    "documentaries": "documentary", "mysteries": "mystery", "westerns": "western",
    "musicals": "musical", "scifi": "sci-fi", "sci fi": "sci-fi", "science fiction": "sci-fi",
    "biopic": "biography", "biopics": "biography", "fantasies": "fantasy",
}
NOT_ASKED = frozenset({"short", "news", "music", "talk-show", "reality-tv", "game-show",
                       "film-noir", "history"})
_LITERAL = re.compile(r"<[^<>\s]*>|@\S+")  # token look-alikes and @id mentions are not words
NEGATIONS = ("no", "not", "don't", "dont", "do not", "never", "nothing", "without", "hate",
             "dislike", "except", "anything but", "isn't", "aren't", "none", "avoid",
             "can't stand", "cannot stand", "tired of", "enough of")
_CLAUSE = re.compile(r"[.!?;,:()]|\b(?<!anything )but\b", re.IGNORECASE)


def vocabulary(catalog: Catalog) -> dict[str, str]:
    """``{word: genre}`` for ``catalog``: its genre names (lower case) but :data:`NOT_ASKED`,
    and the :data:`WORDS` whose genre it has."""
    genres = {g.lower() for it in catalog for g in it.genres} - NOT_ASKED
    return {**{g: g for g in genres}, **{w: g for w, g in WORDS.items() if g in genres}}


def plain_text(text: str) -> str:
    """``text`` with token look-alikes and ``@id`` mentions blanked (they are not words)."""
    return _LITERAL.sub(" ", text)


def pattern(vocab: dict[str, str]) -> re.Pattern:
    """The regular expression of ``vocab``'s words, longest first, as whole words."""
    words = sorted(vocab, key=len, reverse=True)  # "science fiction" before "fiction"
    return re.compile(r"(?<![\w-])(" + "|".join(re.escape(w) for w in words) + r")(?![\w-])",
                      re.IGNORECASE)


def _negated(text: str, start: int) -> bool:
    """Is the word at ``start`` negated: a cue of :data:`NEGATIONS` earlier in its clause,
    within six words?"""
    before = text[:start]
    cut = max((m.end() for m in _CLAUSE.finditer(before)), default=0)
    window = " ".join(re.findall(r"[\w']+", before[cut:].lower())[-6:])
    return any(re.search(rf"(?<![\w']){re.escape(cue)}(?![\w'])", window) for cue in NEGATIONS)


def genres_in(text: str, vocab: dict[str, str]) -> tuple[frozenset[str], frozenset[str]]:
    """``(asked, refused)``: the genres ``text`` asks for and those it negates (module
    docstring); a genre both asked and refused counts as refused."""
    if not vocab:
        return frozenset(), frozenset()
    plain = plain_text(text)
    asked, refused = set(), set()
    for m in pattern(vocab).finditer(plain):
        (refused if _negated(plain, m.start()) else asked).add(vocab[m.group(1).lower()])
    return frozenset(asked - refused), frozenset(refused)


def asked_genres(text: str, vocab: dict[str, str]) -> frozenset[str]:
    """The genres ``text`` asks for, the negated ones left out (module docstring); empty when
    none."""
    return genres_in(text, vocab)[0]


def carries(catalog: Catalog, item_id: str | None, asked: Iterable[str]) -> bool:
    """Whether the item has one of the ``asked`` genres (no item, or no genres: False)."""
    if item_id is None or item_id not in catalog:
        return False
    return bool({g.lower() for g in catalog[item_id].genres} & set(asked))


def following(tops: Sequence[Sequence[str | None]], asked: Sequence[Iterable[str]],
              catalog: Catalog, k: int = 10) -> dict:
    """Mean share of each top-``k`` list whose items carry an asked genre, over the cases that
    ask for one: ``{"share": float | None, "n_cases": int, "per_case": [share of each case
    that asks]}`` (``share`` None with no case). ``tops[i]`` and ``asked[i]`` belong to the
    same case."""
    if len(tops) != len(asked):
        raise ValueError(f"{len(tops)} top lists for {len(asked)} cases")
    shares = []
    for top, want in zip(tops, asked):
        want = set(want)
        if not want:
            continue
        top = list(top)[:k]
        if not top:
            raise ValueError("an empty top list: a ranker returns at least one item")
        shares.append(sum(carries(catalog, i, want) for i in top) / len(top))
    return {"share": sum(shares) / len(shares) if shares else None, "n_cases": len(shares),
            "per_case": shares}
