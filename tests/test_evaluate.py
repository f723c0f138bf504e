"""Protocols on a trained toy world: beam ranks equal exact ranks when the beam covers the
catalog, dedup drops repeats, dialog scores and intent, and save -> load keeps predictions."""
import json

import pytest
import torch

from crslib import config, data, report
from crslib.format import serialize
from crslib.training import run, train
from crslib.evaluation import baselines, dialog_eval, evaluate, recommenders
from crslib.evaluation.baselines import Popularity, Repeat
from crslib.studies.bench import random_sids
from crslib.data import Catalog, Dataset, Item, LoadReport
from crslib.training.model import load_tokenizer, tiny_model
from test_train import ITEMS, toy_world


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    sids = random_sids(ITEMS, 3, 4, 0)
    tok = load_tokenizer("tiny")
    new = serialize.add_special_tokens(tok, None, sids)
    model = tiny_model(len(tok), seed=0, pad_token_id=tok.pad_token_id)
    model.config.gcrs_first_new_token = min(new.values())
    cfg = train.TrainConfig(lr=5e-3, warmup_steps=10, epochs=40, batch_tokens=600,
                            output_vocab="targets", checkpoint_every=10_000)
    out = tmp_path_factory.mktemp("run")
    train.train(model, tok, sids, toy_world(64, 0), cfg, out / "work", sorted(new.values()),
                progress=False)
    catalog = Catalog(Item(i, f"movie {i}") for i in ITEMS)
    ds = Dataset("toy", catalog, {"train": toy_world(64, 0), "test": toy_world(30, 1)}, LoadReport())
    return model, tok, sids, ds, out


def test_cases_and_sampling_are_deterministic(trained):
    _, _, sids, ds, _ = trained
    cases = evaluate.rec_cases(ds, sids)
    assert len(cases) == 30 and all(c.mode == "rec" for c in cases)
    assert evaluate.rec_cases(ds, sids, limit=7, seed=3) == evaluate.rec_cases(ds, sids, limit=7, seed=3)


def test_beam_ranks_equal_exact_ranks_when_the_beam_covers_the_catalog(trained):
    model, tok, sids, ds, _ = trained
    cases = evaluate.rec_cases(ds, sids)
    paper = recommenders.model_ranks(model, tok, sids, cases, "paper", num_beams=len(ITEMS))
    exact = recommenders.model_ranks(model, tok, sids, cases, "community")
    assert paper == exact
    result = evaluate.ranking_result(paper, "paper", dataset="toy")
    assert result["metrics"]["recall@1"] > 0.9
    assert set(result["ci95"]) == set(result["metrics"]) and result["n_cases"] == 30


def test_dedup_drops_items_mentioned_before():
    ex = [serialize.Example("d", 1, "gcrs", "", "", "rec", "a", ("a", "b"), ""),
          serialize.Example("d", 3, "gcrs", "", "", "rec", "c", ("a",), "")]
    cases, ranks = evaluate.select(ex, [1, 2], "dedup")
    assert [c.item for c in cases] == ["c"] and ranks == [2]
    assert evaluate.select(ex, [1, 2], "paper")[1] == [1, 2]


def test_baselines_score_through_the_same_code(trained):
    _, _, sids, ds, _ = trained
    cases = evaluate.rec_cases(ds, sids)
    rep = recommenders.baseline_ranks(Repeat(ds.catalog.ids).fit(ds["train"]), cases)
    pop = recommenders.baseline_ranks(Popularity(ds.catalog.ids).fit(ds["train"]), cases)
    assert all(r is not None for r in rep + pop)
    # the seeker's item is the most recent context item: repeat puts it first
    assert all(r >= 2 or c.item in c.context_items for r, c in zip(rep, cases))


def test_dialog_scores_ppl_and_intent(trained):
    model, tok, sids, ds, out = trained
    head = json.loads((out / "work" / "output_vocab.json").read_text())
    s = dialog_eval.dialog_scores(model, tok, sids, ds["test"], head_ids=head)
    assert 1.0 <= s["ppl"] < 3.0 and s["ppl_tokens"] > 0
    assert s["intent_accuracy"] > 0.9 and s["intent_f1"] > 0.9
    assert s["ppl_tokens_outside_head"] == 0  # the test responses use only training tokens
    full = dialog_eval.dialog_scores(model, tok, sids, ds["test"])
    assert full["ppl"] == full["ppl_full_vocab"] == pytest.approx(s["ppl_full_vocab"], rel=1e-5)
    # a head without some gold tokens: they leave the restricted ppl (no restricted probability
    # to score them with), never scored as another token; the full-vocabulary ppl is unchanged
    gold = sorted(set(tok.encode(" ".join(t.text for d in ds["test"] for t in d.turns))) & set(head))
    small = dialog_eval.dialog_scores(model, tok, sids, ds["test"],
                                      head_ids=sorted(set(head) - set(gold[:5])))
    assert small["ppl_tokens_outside_head"] > 0 and small["ppl_tokens"] == s["ppl_tokens"]
    assert small["ppl_full_vocab"] == pytest.approx(s["ppl_full_vocab"], rel=1e-5)
    assert 1.0 <= small["ppl"] < float("inf")


def test_save_load_gives_identical_predictions(trained, tmp_path):
    model, tok, sids, ds, _ = trained
    cfg = {"profile": "smoke", "dataset": "toy", "variant": "gcrs", "format": "gcrs",
           "model": {"kind": "compact"}, "train": {}, "sids": {}}
    run.save_run(tmp_path, model, tok, sids, config.resolve(cfg))
    model2, tok2, sids2, cfg2 = run.load_run(tmp_path)
    cases = evaluate.rec_cases(ds, sids)[:8]
    assert sids2.to_dict() == sids.to_dict() and config.resolve(cfg2) == config.resolve(cfg)
    a = recommenders.model_ranks(model, tok, sids, cases, "community")
    b = recommenders.model_ranks(model2, tok2, sids2, cases, "community")
    assert a == b
    with pytest.raises(FileNotFoundError, match="not a finished run"):
        run.load_run(tmp_path / "nothing")


def test_every_ranker_is_scored_through_one_interface(trained, tmp_path):
    model, tok, sids, ds, _ = trained
    cfg = {"profile": "smoke", "dataset": "toy", "variant": "gcrs", "format": "gcrs",
           "eval": {"max_context_tokens": 256, "num_beams": 20, "batch_size": 4}}
    run.save_run(tmp_path, model, tok, sids, config.resolve(cfg))
    rec = recommenders.load_recommender(tmp_path)
    sids2 = rec.sids
    assert isinstance(rec, recommenders.GenerativeRecommender) and sids2.to_dict() == sids.to_dict()
    assert (rec.max_context_tokens, rec.num_beams, rec.batch_size) == (256, 20, 4)  # its config
    cases = evaluate.rec_cases(ds, sids)[:8]
    for protocol in ("paper", "community"):
        assert rec.ranks(cases, protocol) == recommenders.model_ranks(
            model, tok, sids, cases, protocol, 256, 20, 4)
    pop = baselines.Popularity(ds.catalog.ids).fit(ds["train"])
    base = recommenders.BaselineRecommender("popularity", pop)
    assert base.ranks(cases, "paper") == recommenders.baseline_ranks(pop, cases)
    # top lists agree with the ranks: the gold item sits at its rank, or beyond k
    for r in (rec, base):
        tops, ranks = r.top(cases, 5), r.ranks(cases, "paper")
        assert all(len(t) == 5 for t in tops)
        assert [t.index(ex.item) + 1 if ex.item in t else None for t, ex in zip(tops, cases)] == [
            x if x is not None and x <= 5 else None for x in ranks]
    with pytest.raises(ValueError, match="unknown protocol"):
        base.ranks(cases, "dialog")


def test_generated_responses_follow_the_format(trained):
    model, tok, sids, ds, out = trained
    head = json.loads((out / "work" / "output_vocab.json").read_text())
    g = dialog_eval.generate_responses(model, tok, sids, ds["test"], head_ids=head, limit=12)
    assert g["n_turns"] == 12 and g["malformed_share"] < 0.2
    assert g["generated_intent_accuracy"] > 0.8
    assert 0 <= g["distinct@2"] <= 1 and g["bleu"] > 10


def test_resp_format_counts_the_same_response_tokens(trained):
    """PPL of a ``resp`` run covers exactly the response tokens a ``gcrs`` run's PPL covers."""
    from crslib.format import packing
    _, tok, sids, ds, _ = trained
    resp_id = tok.convert_tokens_to_ids(serialize.RESP)
    counts = {}
    for fmt in ("gcrs", "resp", "mode_resp"):
        ws = [w for d in ds["test"] for w in packing.pack_dialog(d, sids, tok, fmt, 768)]
        mask = dialog_eval.first_branch_response_mask(ws, None if fmt == "resp" else resp_id)
        tgt = torch.tensor([t for w in ws for t in w.tgt])
        counts[fmt] = tgt[mask].tolist()
    assert counts["gcrs"] == counts["resp"] == counts["mode_resp"] and counts["gcrs"]
    with pytest.raises(ValueError, match="writes no response"):
        dialog_eval.dialog_scores(None, tok, sids, ds["test"], fmt="sid")


def test_decoding_sweep_chooses_by_its_stated_rule(monkeypatch):
    from crslib.decoding.generation import ResponseDecoding
    cands = (ResponseDecoding(), ResponseDecoding(no_repeat_ngram_size=3),
             ResponseDecoding(top_p=0.9), ResponseDecoding(no_repeat_ngram_size=2))
    fake = {cands[0]: (10.0, 0.05, 0.3), cands[1]: (9.5, 0.20, 0.0),  # bleu, distinct@2, loops
            cands[2]: (5.0, 0.40, 0.0), cands[3]: (9.2, 0.25, 0.0)}
    seen = []

    def gen(model, tok, sids, dialogs, decoding, end_at_line_break, **kw):
        seen.append(end_at_line_break)
        b, d2, loop = fake[decoding]
        return {"n_turns": 3, "bleu": b, "distinct@1": 0, "distinct@2": d2, "distinct@3": 0,
                "looping_share": loop, "item_mention_share": 0, "examples": []}
    monkeypatch.setattr(dialog_eval, "generate_responses", gen)
    out = dialog_eval.decoding_sweep(None, None, None, [], candidates=cands)
    # loops 0 for 1..3; BLEU >= 0.9 x 10 leaves 1 and 3; the higher distinct@2 is 3
    assert out["chosen"] == cands[3].name == "greedy,no_repeat=2" and all(seen)
    fake[cands[1]] = (9.5, 0.20, 0.01)  # now only 2 and 3 loop least; 3 has the better BLEU
    fake[cands[2]] = (5.0, 0.90, 0.0)
    fake[cands[3]] = (9.2, 0.25, 0.0)
    assert dialog_eval.decoding_sweep(None, None, None, [],
                                      candidates=cands)["chosen"] == cands[3].name
    fake[cands[3]] = (1.0, 0.25, 0.02)  # the least looping one wins even with a low BLEU
    assert dialog_eval.decoding_sweep(None, None, None, [],
                                      candidates=cands)["chosen"] == cands[2].name
    assert [r["decoding"] for r in out["rows"]] == [c.name for c in cands]


def test_every_recommender_saves_and_loads_to_the_same_ranks(trained, tmp_path):
    """fit / save / load of the Recommender interface: a generative run and a baseline come back
    from their folders ranking exactly as before."""
    model, tok, sids, ds, _ = trained
    cfg = {"profile": "smoke", "dataset": "toy", "variant": "gcrs", "format": "gcrs",
           "train_splits": ["train"], "eval": {"max_context_tokens": 256, "num_beams": 20}}
    rec = recommenders.GenerativeRecommender(model, tok, sids, 256, 20, 4,
                                             config.resolve(cfg))
    cases = evaluate.rec_cases(ds, sids)[:6]
    rec.save(tmp_path / "gen")
    back = recommenders.load_recommender(tmp_path / "gen")
    assert isinstance(back, recommenders.GenerativeRecommender)
    assert back.config == run.saved_config(tmp_path / "gen")
    assert back.ranks(cases, "paper") == rec.ranks(cases, "paper")
    assert back.top(cases, 3) == rec.top(cases, 3)
    with pytest.raises(ValueError, match="config"):
        recommenders.GenerativeRecommender(model, tok, sids).save(tmp_path / "nothing")
    base = recommenders.BaselineRecommender("repeat").fit(config.resolve(cfg), ds, sids=sids)
    base.save(tmp_path / "base")
    again = recommenders.BaselineRecommender.load(tmp_path / "base", ds=ds, sids=sids)
    assert again.ranks(cases, "paper") == base.ranks(cases, "paper") == recommenders.baseline_ranks(
        baselines.Repeat(ds.catalog.ids).fit(ds["train"]), cases)
    with pytest.raises(ValueError, match="unknown baseline"):
        recommenders.BaselineRecommender("oracle").fit(config.resolve(cfg), ds, sids=sids)
    with pytest.raises(FileNotFoundError, match="not a finished run"):
        recommenders.load_recommender(tmp_path / "nothing")


def test_evaluate_scores_any_recommender_and_dedup_drops_repeats(trained):
    _, _, sids, ds, _ = trained
    import dataclasses
    cases = evaluate.rec_cases(ds, sids)
    cases[0] = dataclasses.replace(cases[0], context_items=(cases[0].item,))  # a repeat
    rec = recommenders.BaselineRecommender("repeat", Repeat(ds.catalog.ids).fit(ds["train"]))
    full = evaluate.evaluate(rec, cases, "community")
    assert full["case_ranks"] == rec.ranks(cases, "community") and full["n_cases"] == len(cases)
    dd = evaluate.evaluate(rec, cases, "dedup")
    kept = [r for r, ex in zip(full["case_ranks"], cases) if ex.item not in ex.context_items]
    assert len(kept) == len(cases) - 1 and full["case_ranks"][0] == 1  # repeat ranks it first
    assert dd["case_ranks"] == kept and dd["protocol"] == "dedup"
    assert dd["metrics"] == evaluate.ranking_result(kept, "dedup")["metrics"]


def test_load_recommender_opens_a_baseline_by_name_as_the_profile_scores_it(shared_data):
    """``load_recommender("popularity", dataset=..., profile=...)`` is the baseline whose ranks
    the committed result holds (the profile's gcrs config: its SIDs, its training splits)."""
    saved = report.RESULTS / "cpu" / "inspired" / "popularity.paper.json"
    if not saved.is_file():
        pytest.skip(f"{saved} is not here")
    rec = recommenders.load_recommender("popularity", dataset="inspired", profile="cpu",
                                        data_root=shared_data)
    assert isinstance(rec, recommenders.BaselineRecommender) and rec.name == "popularity"
    ds = data.load("inspired", shared_data)
    cases = evaluate.rec_cases(ds, rec.sids, "test", "gcrs")
    assert rec.ranks(cases, "paper") == json.loads(saved.read_text())["case_ranks"]
    with pytest.raises(ValueError, match="needs a dataset and a profile"):
        recommenders.load_recommender("repeat")
