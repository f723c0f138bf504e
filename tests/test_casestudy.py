"""Case studies: the selection rules on hand-made rank lists (exact picks, seeded tie-break,
empty when nothing matches), case lists shared across formats, and answers of a tiny random
backbone (a saved run) with valid catalog items, titles and the exact top 5."""
import pytest
import torch

from crslib import config
from crslib.format import serialize
from crslib.decoding import item_scores
from crslib.training import run
from crslib.studies import casestudy
from crslib.studies.bench import random_sids
from crslib.data import Catalog, Dialog, Item, Turn
from crslib.training.model import load_tokenizer, tiny_model

ITEMS = [str(100 + i) for i in range(16)]
N = None  # not in the top 50

# hand-made gold ranks of 8 cases
RANKS = {"gcrs": [1, 3, N, 2, 1, 7, N, 4],
         "resp": [N, 12, 2, N, N, N, 5, 20],
         "tiger": [N, N, N, 11, 3, N, 9, N],
         "repeat": [30, 40, 1, 50, 60, 70, 80, 90]}


# ----------------------------------------------------------------------------- rules
def test_wins_picks_exactly_the_cases_the_rule_names_best_first():
    rule = casestudy.wins()
    assert rule.text.startswith("gold item in gcrs's top 5 and in neither resp nor tiger's top 10")
    # matches: 0 (gcrs 1), 1 (3; resp 12 is outside the top 10), 3 (2; tiger 11), 7 (4)
    assert casestudy.select_cases(RANKS, rule, 10) == [0, 3, 1, 7]
    assert casestudy.select_cases(RANKS, rule, 3) == [0, 3, 1]
    assert casestudy.select_cases(RANKS, casestudy.wins(k=1), 10) == [0]  # case 4: tiger has it


def test_fails_prefers_cases_most_rivals_got():
    rule = casestudy.fails()
    # gcrs misses (None) in cases 2 and 6: case 2 has resp 2 and repeat 1 (two rivals),
    # case 6 has resp 5 and tiger 9 (two rivals, best rank 5): 2 first (best rank 1)
    assert casestudy.select_cases(RANKS, rule, 10) == [2, 6]
    no_repeat = casestudy.fails(others=("resp", "tiger"))  # case 2 now has one rival only
    assert casestudy.select_cases(RANKS, no_repeat, 10) == [6, 2]
    ranks = {**RANKS, "resp": [N, 12, 8, N, N, N, 5, 20], "repeat": [30] * 8}
    # case 2: resp alone (one rival) ranks behind case 6 (resp and tiger)
    assert casestudy.select_cases(ranks, rule, 10) == [6, 2]
    ranks = {**RANKS, "resp": [N, 12, 2, N, N, 4, 5, 20]}
    assert casestudy.select_cases(ranks, rule, 10) == [2, 6]  # gcrs has case 5 at rank 7
    assert casestudy.select_cases(ranks, casestudy.fails(k=5), 10) == [2, 6, 5]


def test_ties_are_broken_by_a_seeded_shuffle():
    ranks = {"gcrs": [2] + [1] * 9, "resp": [N] * 10, "tiger": [N] * 10}
    rule = casestudy.wins()
    picks = {s: casestudy.select_cases(ranks, rule, 3, seed=s) for s in range(6)}
    for s, p in picks.items():
        assert p == casestudy.select_cases(ranks, rule, 3, seed=s)  # deterministic
        assert len(p) == 3 and 0 not in p  # rank 2 never beats the nine ties at rank 1
    assert len({tuple(p) for p in picks.values()}) > 1  # the seed decides among ties
    assert casestudy.select_cases(ranks, rule, 10, seed=0)[-1] == 0  # the worse case comes last


def test_nothing_matches_gives_an_empty_list():
    ranks = {"gcrs": [N, N], "resp": [1, N], "tiger": [N, 2]}
    assert casestudy.select_cases(ranks, casestudy.wins(), 3) == []
    assert casestudy.select_cases({"gcrs": [], "resp": [], "tiger": []}, casestudy.wins(), 3) == []
    assert casestudy.select_cases(RANKS, casestudy.wins(), 0) == []


def test_bad_rank_lists_are_refused():
    with pytest.raises(KeyError, match="repeat"):
        casestudy.select_cases({k: RANKS[k] for k in ("gcrs", "resp", "tiger")},
                               casestudy.fails(), 3)
    with pytest.raises(ValueError, match="different lengths"):
        casestudy.select_cases({**RANKS, "resp": [1]}, casestudy.wins(), 3)


# ----------------------------------------------------------------------------- answers
def dialogs() -> list[Dialog]:
    out = []
    for k in range(4):
        a, b = ITEMS[k], ITEMS[k + 5]
        out.append(Dialog(str(k), [
            Turn("user", "hello, any movie tonight?", ()),
            Turn("assistant", "what do you like?", ()),
            Turn("user", f"I liked @{a}", (a,)),
            Turn("assistant", f"then watch @{b} or @{a}", (b, a))]))
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    torch.set_num_threads(1)
    sids = random_sids(ITEMS, 3, 4, 0)
    tok = load_tokenizer("tiny")
    serialize.add_special_tokens(tok, None, sids)
    model = tiny_model(len(tok), seed=0, pad_token_id=tok.pad_token_id)
    catalog = Catalog(Item(i, f"Movie {k}", str(1990 + k)) for k, i in enumerate(ITEMS))
    folder = tmp_path_factory.mktemp("run")
    cfg = {"profile": "smoke", "dataset": "toy", "variant": "gcrs", "format": "gcrs",
           "model": {"kind": "compact"},
           "train": {}, "sids": {}, "eval": {"num_beams": 50, "max_context_tokens": 256}}
    run.save_run(folder, model, tok, sids, config.resolve(cfg))
    return model, tok, sids, catalog, folder


def test_case_lists_are_the_same_across_formats(world):
    _, _, sids, _, _ = world
    lists = {f: serialize.serialize_all(dialogs(), sids, f) for f in ("gcrs", "resp", "tiger")}
    lists = {f: [ex for ex in c if ex.mode == "rec"] for f, c in lists.items()}
    keys = casestudy.same_cases(lists)
    assert len(keys) == 8 and keys[:2] == [("0", 3, ITEMS[5]), ("0", 3, ITEMS[0])]
    with pytest.raises(ValueError, match="first difference at position 1"):
        casestudy.same_cases({"gcrs": lists["gcrs"],
                              "tiger": lists["tiger"][:1] + lists["tiger"][2:]})


def test_answers_of_a_saved_run_are_5_catalog_items_with_titles(world):
    model, tok, sids, catalog, folder = world
    cases = [ex for ex in serialize.serialize_all(dialogs(), sids, "gcrs") if ex.mode == "rec"]
    got = casestudy.answers(folder, cases, catalog)
    assert len(got) == len(cases)
    for ex, a in zip(cases, got):
        assert a.model == "gcrs" and a.fmt == "gcrs" and len(a.top) == 5
        assert [t.title for t in a.top] == [catalog[t.item_id].name for t in a.top]
        assert len({t.item_id for t in a.top}) == 5
        scores = [t.score for t in a.top]
        assert scores == sorted(scores, reverse=True) and all(s < 0 for s in scores)
        # the beam (width 50) covers the 16 items: the top 5 is the exact top 5
        exact = item_scores.score_all_items(model, tok, serialize.rec_prompt_ids(ex, tok, 256),
                                            sids)
        assert [t.item_id for t in a.top] == exact.items[:5]
        assert scores == pytest.approx(exact.scores[:5], abs=1e-4)
        assert a.gold_rank == exact.items.index(ex.item) + 1
        assert a.mode in ("rec", "chat") and 0 < a.p_rec < 1
        assert (a.mode == "rec") == (a.p_rec > 0.5)
        assert a.item == (a.top[0].item_id if a.mode == "rec" else None)
        assert isinstance(a.response, str) and set(a.mentions) <= set(ITEMS)
        assert a.as_dict()["top"][0]["title"] == a.top[0].title
    # deterministic; scoring fewer cases packs other beam rows (beam_search.sid_beam_search), which
    # moves a score by float rounding only
    again = casestudy.answers(folder, cases[:2], catalog)
    for x, y in zip(again, got[:2]):
        assert [t.item_id for t in x.top] == [t.item_id for t in y.top]
        assert [t.score for t in x.top] == pytest.approx([t.score for t in y.top], abs=1e-5)
        assert (x.mode, x.gold_rank, x.response, x.item, x.mentions) == (
            y.mode, y.gold_rank, y.response, y.item, y.mentions)
    rows = casestudy.side_by_side({"gcrs": got[0]}, gold=cases[0].item)
    assert rows[0]["model"] == "gcrs" and rows[0]["top"].startswith("1. Movie")


def test_resp_and_tiger_answers(world):
    model, tok, sids, catalog, _ = world
    for fmt in ("resp", "tiger"):
        cases = [ex for ex in serialize.serialize_all(dialogs(), sids, fmt) if ex.mode == "rec"]
        runner = casestudy.CaseRunner(model, tok, sids, fmt, catalog, name=fmt,
                                      max_new_tokens=8)
        ranked = runner.rank(cases)
        got = runner.answers(cases[:3], ranked[:3], k=5)
        for a, r in zip(got, ranked):
            assert [t.item_id for t in a.top] == r.items[:5] and a.p_rec is None
            assert all(t.item_id in catalog for t in a.top)
        if fmt == "tiger":
            assert all(a.mode == "rec" and a.response == "" for a in got)
        else:
            assert all(a.mode == ("rec" if a.mentions else "chat") for a in got)
        with pytest.raises(ValueError, match="format"):
            runner.answers([ex for ex in serialize.serialize_all(dialogs(), sids, "gcrs")
                            if ex.mode == "rec"][:1])


def test_case_record_shows_titles_not_sids(world):
    _, _, sids, catalog, _ = world
    ex = [e for e in serialize.serialize_all(dialogs(), sids, "gcrs") if e.mode == "rec"][1]
    rec = casestudy.case_record(ex, sids, catalog, context_turns=2)
    assert rec["context"] == [["assistant", "what do you like?"],
                              ["user", "I liked Movie 0 (1990)"]]
    assert rec["gold_response"] == "then watch Movie 5 (1995) or Movie 0 (1990)"
    assert rec["gold_title"] == "Movie 0 (1990)" and rec["repeat"] is True
    assert "<BOI>" not in str(rec)


def test_chat_continue_ids_decodes_like_reply(world):
    from crslib import chat
    model, tok, sids, catalog, _ = world
    s = chat.ChatSession(model, tok, sids, catalog, max_new_tokens=10)
    r = s.reply("I liked @103, what else?", mode="rec")
    prompt = s.prompt_ids(s.turns[:-1])
    text, mentions, truncated = s.continue_ids(prompt + list(r.tokens[:7]))  # mode, item, <RESP>
    assert (text, mentions, truncated) == (r.serialized, r.mentions, r.truncated)
    assert len(s.turns) == 2  # history untouched
