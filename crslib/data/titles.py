"""Titles typed as plain text, linked to catalog items (the chat's input side).

In the datasets an item mention is ``@<item id>`` in the turn text, which the serializer writes
as ``<BOI>SID<EOI>``. A person types titles instead: "I loved The Shining", "superbad",
"It (2017)". :class:`TitleLinker` finds them and writes the same ``@<item id>`` mention, so a
typed title reaches the model exactly as a dataset mention does.

The rule, in order:

* Spans of words are compared with catalog titles after :func:`crslib.data.normalize_title`
  (case, punctuation and a leading article ignored), the longest span first, left to right;
  a year right after the title, ``1980`` or ``(1980)``, belongs to the mention.
* A match is linked when a year follows it, or when it is *distinctive*: two or more typed
  words (a typed leading article counts when it is the title's own) not all of which are very
  common words or words that describe films (:data:`FILM_WORDS`, the catalog's genres), or one word
  the tokenizer splits into several pieces (a rare word such as "Superbad"). Otherwise — one
  common word ("It", "Up", "Her") or only common words ("Get Out") — it is linked only when
  every word is typed with a capital initial and the span does not open the sentence, so that
  "get out of here" or "It was great" stay text. A one-letter title ("I") needs its year.
* Words inside a token look-alike (``<MODE=REC>``) or an explicit ``@<item id>`` mention are
  never part of a title.
* A title shared by several items: the typed year decides; without a year, the item the
  dataset mentions most often (the catalog's ``mentions``), then the most recent one.
"""
from __future__ import annotations

import re
from typing import NamedTuple

from crslib.data import Catalog, genres, normalize_title

# very common English words: a title made only of these is linked only when typed like a title
COMMON_WORDS = frozenset("""
a about after again all also am an and any are as at back be because been before being best
big but by can come could day did do does don down even ever every few find first for from
get give go going good got great had has have he her here him his home how i if in into is it
its just know last let life like little long look love made make man many me more most much
must my never new next night no not now of off old on one only or other our out over people
play really right said same see she should show so some something still such take tell than
that the their them then there these they thing things think this those time to too two up us
very want was way we well went were what when where which who why will with without work
would year yes you your
""".split())
# words people describe films with: a title made only of these and COMMON_WORDS ("Scary Movie",
# "Horror Movie") is, in "I want a scary movie", a request, so it too needs to be typed as a title
FILM_WORDS = frozenset({"movie", "movies", "film", "films", "flick", "flicks", "series", "show",
                        "shows", "genre", *genres.WORDS})

_WORD = re.compile(r"[\w'’&.:-]+")
_YEAR = re.compile(r"\s*\(?((?:19|20)\d\d)\)?(?!\w)")
_SENTENCE_END = re.compile(r"[.!?]\s*$")
_LITERAL = re.compile(r"<[^<>\s]*>|@\S+")  # token look-alikes and explicit @id mentions stay
ARTICLES = ("the", "a", "an")


class Link(NamedTuple):
    start: int  # character span in the text, year included
    end: int
    item_id: str


class TitleLinker:
    """Finds catalog titles in text (module docstring); ``tokenizer`` tells rare words."""

    def __init__(self, catalog: Catalog, tokenizer, item_ids=None):
        allowed = set(item_ids) if item_ids is not None else None
        self.catalog = catalog
        self._ids: dict[str, list[str]] = {}
        for it in catalog:
            if allowed is None or it.id in allowed:
                self._ids.setdefault(normalize_title(it.title), []).append(it.id)
        self._ids.pop("", None)
        self.max_words = max((len(k.split()) for k in self._ids), default=0) + 1  # + article
        self._tok = tokenizer
        self._rare: dict[str, bool] = {}
        self._common = COMMON_WORDS | FILM_WORDS | set(genres.vocabulary(catalog))

    # ------------------------------------------------------------------ public
    def link(self, text: str) -> str:
        """``text`` with every linked title (and its year) replaced by ``@<item id>``."""
        out, last = [], 0
        for ln in self.find(text):
            out += [text[last:ln.start], f"@{ln.item_id}"]
            last = ln.end
        return "".join(out + [text[last:]])

    def find(self, text: str) -> list[Link]:
        """The linked titles of ``text``, left to right, non-overlapping."""
        literal = [(m.start(), m.end()) for m in _LITERAL.finditer(text)]
        words = [(m.start(), m.end()) for m in _WORD.finditer(text)
                 if not any(a <= m.start() < b for a, b in literal)]
        links, k = [], 0
        while k < len(words):
            for n in range(min(self.max_words, len(words) - k), 0, -1):
                found = self._match(text, words, k, n)
                if found is not None:
                    links.append(found)
                    k += n
                    while k < len(words) and words[k][0] < found.end:  # the year's word
                        k += 1
                    break
            else:
                k += 1
        return links

    # ------------------------------------------------------------------ rule
    def _match(self, text: str, words, k: int, n: int) -> Link | None:
        start, end = words[k][0], words[k + n - 1][1]
        span = text[start:end].rstrip(".:-")
        end = start + len(span)
        ids = self._ids.get(normalize_title(span))
        if not ids:
            return None
        year_m = _YEAR.match(text, end)
        year = year_m.group(1) if year_m else ""
        if year and not any(self.catalog[i].year == year for i in ids):
            year, year_m = "", None  # a number that is not this title's year
        if not year and (len(normalize_title(span)) < 2 or (  # "I", "A": only with a year
                not self._distinctive(span, ids) and not self._typed_as_title(text, start, span))):
            return None
        return Link(start, year_m.end() if year_m else end, self._choose(ids, year))

    def _distinctive(self, span: str, ids: list[str]) -> bool:
        typed = [w.lower() for w in span.split()]
        if len(typed) > 1 and typed[0] in ARTICLES and not any(  # "a comedy" is not "The Comedy"
                self.catalog[i].title.lower().startswith(typed[0] + " ") for i in ids):
            typed = typed[1:]
        if len(typed) >= 2:
            return not all(w.strip("'’.:-&") in self._common for w in typed)
        word = typed[0]
        if word not in self._rare:
            self._rare[word] = len(self._tok(" " + word, add_special_tokens=False)["input_ids"]) > 1
        return self._rare[word] and word not in self._common

    @staticmethod
    def _typed_as_title(text: str, start: int, span: str) -> bool:
        opens_sentence = not text[:start].strip() or bool(_SENTENCE_END.search(text[:start]))
        words = [w for w in span.split() if w.lower() not in ARTICLES or w is span.split()[0]]
        return not opens_sentence and all(w[:1].isupper() or w[:1].isdigit() for w in words)

    def _choose(self, ids: list[str], year: str) -> str:
        if year:
            ids = [i for i in ids if self.catalog[i].year == year]
        return max(ids, key=lambda i: (int(self.catalog[i].extra.get("mentions", 0) or 0),
                                       self.catalog[i].year or "", -ids.index(i)))


def same_film(catalog: Catalog | None, a: str, b: str) -> bool:
    """Whether catalog items ``a`` and ``b`` name one film: the same id, or the same title
    (:func:`crslib.data.normalize_title`) where the years agree or one has none (ReDial lists
    "The Exorcist" and "The Exorcist (1973)" apart); "It (1990)" and "It (2017)" stay two
    films. Without a catalog, only the same id."""
    if a == b:
        return True
    if catalog is None or a not in catalog or b not in catalog:
        return False
    x, y = catalog[a], catalog[b]
    return (normalize_title(x.title) == normalize_title(y.title)
            and (x.year == y.year or not x.year or not y.year))
