"""The chat a person meets: the demo's run (the committed ReDial SmolLM2 run) plays the scripted
conversation (chat.SCRIPT) with the decoding, intent cut and beam width chosen on validation
turns, and reads like a recommender: no loops, no digit babble, each turn ends, recommendations
are titles the user did not name and the assistant did not already show, requests are followed.
Skipped when the run, its validation results or the data are absent."""
import json
import re

import pytest
import torch

from crslib import chat, report
from crslib.decoding.generation import ResponseDecoding

RUN = report.REPO / "runs" / "cpu" / "redial" / "backbone_smollm2_135m"
SAVED = report.REPO / "results" / "cpu" / "redial" / "backbone_smollm2_135m"


@pytest.fixture(scope="module")
def transcript(shared_data):
    chosen = {k: SAVED.with_name(SAVED.name + f".{k}.json") for k in ("decoding", "intent", "chat_beam")}
    if not (RUN / "train_summary.json").is_file() or not all(p.is_file() for p in chosen.values()):
        pytest.skip(f"{RUN} or its validation choices are not here")
    torch.set_num_threads(1)
    session = chat.ChatSession.from_run(RUN, shared_data)  # what a user gets: no arguments
    got = {k: json.loads(p.read_text()) for k, p in chosen.items()}
    assert session.chosen_on_validation == ("decoding", "intent_cut", "num_beams")
    assert session.decoding == ResponseDecoding(**got["decoding"]["chosen_setting"])
    assert (session.intent_cut, session.num_beams) == (got["intent"]["cut"],
                                                       got["chat_beam"]["chosen"])
    return session, chat.run_script(session, chat.SCRIPT["redial"])


def test_responses_do_not_loop_or_babble(transcript):
    _, rows = transcript
    for r in rows:
        assert r["assistant"].strip(), r
        assert not r["repeats_3gram"], r["assistant"]
        assert r["longest_digit_run"] <= 4, r["assistant"]
        assert "\n" not in r["assistant"] and not re.search(r"(User|Assistant):", r["assistant"])


def test_it_recommends_new_titles_each_time(transcript):
    session, rows = transcript
    rec = [r for r in rows if r["intent"] == "rec"  # free mode: the model picks the intent
           and not r["why"].startswith("about")]  # "why that one?" is about the last one
    assert rec, [r["intent"] for r in rows]
    firsts = [r["recommended"][0] for r in rec]
    assert len(set(firsts)) == len(firsts), firsts  # never the same top title twice
    named = {session.title(i) for i in session.named_items()}
    assert named and not named & {t for r in rec for t in r["recommended"]}
    for r in rows:  # nor do the responses bring back a title the user named
        assert not any(t in r["assistant"] for t in named if t not in r["user"]), r


def test_requests_are_followed_and_why_gets_an_answer_about_the_item(transcript):
    _, rows = transcript
    scary, eighties, why, no_horror = rows[:4]
    assert scary["asked"] == "horror" and eighties["asked"] == "from 1980 to 1989"
    assert no_horror["asked"] == "thriller, not horror"
    for r in (scary, eighties, no_horror):  # "only what I asked for" is on by default
        if r["intent"] == "rec":
            hits, n = map(int, r["satisfying"].split("/"))
            assert hits == n > 0, r
    if eighties["intent"] == "rec":
        assert why["why"].startswith(f"about {eighties['recommended'][0]}")
    assert all(r["satisfying"] == "" for r in rows if not r["asked"])
    assert all(not r["named_recommended"] for r in rows)
    assert all(r["names_its_item"] for r in rows if r["intent"] == "rec")


def test_merged_adapters_answer_as_the_trained_model(transcript, shared_data):
    # the chat merges the LoRA adapters into the base weights (speed); the reply is the same
    session, _ = transcript
    assert not hasattr(session.model, "peft_config")  # merged: a plain causal LM
    kw = dict(decoding=session.decoding, intent_cut=session.intent_cut,
              num_beams=session.num_beams)
    unmerged = chat.ChatSession.from_run(RUN, shared_data, merge_lora=False, **kw)
    assert hasattr(unmerged.model, "peft_config")
    merged = session.fresh()
    for s in (merged, unmerged):
        s.reply("Hi! I loved The Shining (1980). Can you recommend a scary movie?")
    a, b = merged.replies[-1], unmerged.replies[-1]
    assert a.text == b.text and [x.item_id for x in a.recommendations] == \
        [x.item_id for x in b.recommendations]
    for x, y in zip(a.recommendations, b.recommendations):
        assert abs(x.score - y.score) < 1e-3


def test_a_reply_after_a_refused_title_is_a_finished_answer(transcript):
    # a reviewer's conversation: opened with ChatSession.from_run's old defaults (greedy, no
    # validated settings) the second reply babbled, unfinished: "I haven't seen 50 First Dates
    # (2004), but I have seen 2 of the 3 movies in the Bridesmaids (2011), Game Night (2018)"
    session, _ = transcript
    s = session.fresh()
    s.reply("Hi! I want a scary movie for tonight. I loved The Shining.")
    r = s.reply("Seen it. Something lighter, maybe a comedy like Superbad?")
    assert r.text.rstrip()[-1:] in ".!?", r.text
    assert len(r.mentions) <= 2, r.text
