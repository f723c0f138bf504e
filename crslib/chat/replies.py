"""What a chat reply is: the inference modes, a reply and its recommendations, and the
input errors a person sees."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import NamedTuple

INFERENCE_MODES = ("free", "rec", "chat", "item")


MODE_LABELS = {"free": "free (model decides)", "rec": "guided: recommend",
               "chat": "guided: chat", "item": "item-conditioned"}


MAX_CHARS = 1000


SAMPLE_CANDIDATES = 4  # draws per reply when the chat samples (ChatSession.candidates)


# "Why that one?", "tell me more about it": a question about the item just recommended
FOLLOW_UP = re.compile(
    r"\bwhy\b[^.?!]*\b(that|this|it|one|pick|picked|choose|chose|recommend|recommended|suggest)\b"
    r"|\b(what'?s|what is|tell me( more)?|more|anything)\s+(else\s+)?about\s+(it|that|this)\b"
    r"|\bwhat('?s| is) (it|that|this)( one| movie| film)? (about|like)\b", re.IGNORECASE)


_NEW_REQUEST = re.compile(r"\b(another|else|other|others|different|instead|something|anything)\b"
                          r"(?!\s+(else\s+)?about)", re.IGNORECASE)


def is_follow_up(text: str) -> bool:
    """Does ``text`` ask about the item just recommended, rather than for a new one?"""
    return bool(FOLLOW_UP.search(text)) and not _NEW_REQUEST.search(
        FOLLOW_UP.sub(" ", text))


class InputError(ValueError):
    """A user message that cannot be answered (empty, too long, unknown item); the message
    is written for people."""


class Recommendation(NamedTuple):
    item_id: str
    title: str
    score: float  # summed per-level log-probability of the item's SID (trie module docstring)
    sid: str  # '<a_17><b_63><c_0><d_25>'


@dataclass(frozen=True)
class Reply:
    """One assistant turn.

    ``requested`` is the inference mode asked for, ``mode`` the intent used (``rec``/``chat``);
    ``recommendations`` best first (``top_k`` in rec mode, the given item in item mode, empty
    for chat); ``item`` the item the response was written after; ``text`` the response for
    people (mentions as titles); ``serialized`` the response as it enters the history (mentions
    as SIDs, literals escaped); ``raw`` the whole target as tokens, and ``tokens`` its ids;
    ``p_rec`` the free-mode probability of ``<MODE=REC>`` against ``<MODE=CHAT>``;
    ``truncated``: ``max_new_tokens`` was reached before the end-of-turn token;
    ``request``: what the message asked for, in words (:mod:`crslib.data.request`; empty when
    nothing checkable), and ``matching`` how many catalog items satisfy it when the list was
    restricted to them (``only_asked``), else None; ``reason``: the decision in words.
    """

    requested: str
    mode: str
    recommendations: list[Recommendation]
    item: str | None
    text: str
    serialized: str
    raw: str
    tokens: tuple[int, ...]
    mentions: tuple[str, ...] = ()
    p_rec: float | None = None
    truncated: bool = False
    seconds: float = 0.0
    request: str = ""
    matching: int | None = None
    reason: str = ""  # the decision in words, for the badge


def reason(requested: str, mode: str, intent: str, p_rec: float | None, title: str,
           intent_cut: float = 0.0) -> str:
    """The decision of a reply in words (the widget's badge)."""
    if requested == "free" and mode == "item":
        return f"about {title}: you asked about it (item-conditioned)"
    if mode == "item":
        return f"about {title}: the item you picked (item-conditioned)"
    if requested != "free":
        return ("recommending: you asked it to (guided)" if intent == "rec"
                else "chatting: you asked it to (guided)")
    cut = 1 / (1 + math.exp(-intent_cut))
    rule = ("the paper's rule, p > 0.50" if intent_cut == 0 else
            f"recommends from p > {cut:.2f}, a cut chosen on validation turns")
    what = "recommending" if intent == "rec" else "chatting"
    return f"{what}: the model's choice (p(recommend) = {p_rec:.2f}; {rule})"
