"""The scripted conversation of issue 22: one turn per kind of request, played on a session."""
from __future__ import annotations

import re
from typing import Sequence

from crslib.chat.session import ChatSession
from crslib.data import request as request_mod
from crslib.metrics import repeats_ngram

# A conversation a person might have: titles typed as text, requests for recommendations
SCRIPT = {  # one turn per kind of request (issue 22): a genre, a decade, a follow-up about the
    # item just recommended, a refused genre, a genre with a liked title, an audience
    "redial": ("Hi! I want a scary movie for tonight. I loved The Shining.",
               "Something from the 80s maybe?",
               "Tell me why you picked that one.",
               "I don't like horror at all. A thriller instead?",
               "Do you have a comedy too? I liked Superbad (2007).",
               "What about something for the whole family?"),
    "inspired": ("Hi! I want a scary movie for tonight. I loved The Shining.",
                 "Something from the 80s maybe?",
                 "Tell me why you picked that one.",
                 "I don't like horror at all. A thriller instead?",
                 "Do you have a comedy too? I liked Superbad.",
                 "What about something for the whole family?"),
}


def run_script(session: ChatSession, script: Sequence[str]) -> list[dict]:
    """Play ``script`` in free mode from a fresh conversation; one row per turn with the checks
    a person would make: a repeated word 3-gram (a loop), the longest run of digits, the
    recommended items the user named, what the message asks for (:mod:`crslib.data.request`) and
    how many of the recommendations satisfy it, whether a recommendation turn's response names
    its item, and the seconds the reply took."""
    session.reset()
    rows = []
    for text in script:
        r = session.reply(text, mode="free")
        named = session.named_items()
        asked = (request_mod.parse(text, session.catalog, session._genre_words)
                 if session.catalog is not None else request_mod.Request())
        recs = [x.item_id for x in r.recommendations]
        ok = sum(request_mod.satisfies(session.catalog, i, asked) for i in recs) if asked else 0
        rows.append({"user": session.history[-2][1], "intent": r.mode, "why": r.reason,
                     "assistant": r.text, "recommended": [session.title(i) for i in recs],
                     "asked": asked.describe(),
                     "satisfying": f"{ok}/{len(recs)}" if asked and recs else "",
                     "named_recommended": [session.title(i) for i in recs if i in named],
                     "names_its_item": (r.item in r.mentions) if r.mode == "rec" else None,
                     "repeats_3gram": repeats_ngram(r.text, 3),
                     "longest_digit_run": max((len(m) for m in re.findall(r"\d+", r.text)),
                                              default=0),
                     "seconds": round(r.seconds, 2)})
    return rows
