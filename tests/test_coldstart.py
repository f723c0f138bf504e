"""Cold start: atomic IDs are a 1-level bijection that the SID machinery accepts; the hold-out
is seeded and drawn only from test targets; removal drops exactly the dialogs that mention a
held-out item; per-group metrics equal hand-computed values."""
import pytest
import torch

from crslib import config
from crslib.format import serialize
from crslib.decoding import beam_search, item_scores, trie
from crslib.training import model as backbones, run
from crslib.studies import coldstart
from crslib.data import Catalog, Dataset, Dialog, Item, LoadReport, Turn
from crslib.ids.semantic_ids import SemanticIDs, atomic_ids, build_semantic_ids

ITEMS = ["10", "11", "12", "13", "14", "15"]


def toy_dataset() -> Dataset:
    catalog = Catalog(Item(i, f"Movie {i}") for i in ITEMS)
    train = [Dialog("t0", [Turn("user", "hi"), Turn("assistant", "try @10", ("10",))]),
             Dialog("t1", [Turn("user", "I liked @12", ("12",)), Turn("assistant", "ok")]),
             Dialog("t2", [Turn("user", "anything"), Turn("assistant", "see @11", ("11",))]),
             Dialog("t3", [Turn("user", "what about @13"), Turn("assistant", "sure")])]  # text only
    test = [Dialog("s0", [Turn("user", "I liked @15", ("15",)),
                          Turn("assistant", "then @10 or @12", ("10", "12"))]),
            Dialog("s1", [Turn("user", "hello"), Turn("assistant", "@13", ("13",)),
                          Turn("assistant", "and @99", ("99",))])]  # 99: not in the catalog
    return Dataset("toy", catalog, {"train": train, "test": test}, LoadReport())


# ----------------------------------------------------------------------------- atomic IDs
def test_atomic_ids_are_a_one_level_bijection():
    s = atomic_ids(ITEMS)
    assert s.levels == 1 and s.codebook_size == len(ITEMS) and len(s) == len(ITEMS)
    assert [s.code_of(i) for i in ITEMS] == [(k,) for k in range(len(ITEMS))]
    assert [s.item_of((k,)) for k in range(len(ITEMS))] == ITEMS and s.item_of((6,)) is None
    assert s.tokens("12") == "<a_2>" and s.all_tokens() == [f"<a_{k}>" for k in range(6)]
    catalog = Catalog(Item(i, f"Movie {i}") for i in ITEMS)
    built = build_semantic_ids(catalog, "atomic", 1, None)
    assert built.item_ids == ITEMS and (built.codes == s.codes).all()
    assert build_semantic_ids(catalog, "atomic", 1, 6).codebook_size == 6
    with pytest.raises(ValueError, match="atomic"):
        build_semantic_ids(catalog, "atomic", 4, 64)


def test_atomic_ids_round_trip_and_go_through_the_sid_machinery(tmp_path):
    torch.set_num_threads(1)
    s = atomic_ids(ITEMS)
    again = SemanticIDs.load(s.save(tmp_path / "sids.json"))
    assert again.item_ids == ITEMS and (again.codes == s.codes).all()
    assert trie.SIDTrie.from_sids(s).allowed_next(()) == tuple(range(6))
    tok = backbones.load_tokenizer("tiny")
    new = serialize.add_special_tokens(tok, None, s)
    net = backbones.tiny_model(len(tok), seed=0, pad_token_id=tok.pad_token_id)
    catalog = Catalog(Item(i, f"Movie {i}") for i in ITEMS)
    backbones.init_new_rows(net, tok, s, catalog, seed=0)  # 1 level x 6 codes
    rows = net.get_input_embeddings().weight[[new[t] for t in s.all_tokens()]]
    assert torch.isfinite(rows).all() and len({tuple(r.tolist()) for r in rows}) == 6
    prompt = tok("User: hi\nAssistant:" + serialize.MODE_REC + serialize.BOI,
                 add_special_tokens=False)["input_ids"]
    beam = beam_search.sid_beam_search(net, tok, prompt, s, k=6, num_beams=6)
    exact = item_scores.score_all_items(net, tok, prompt, s)
    assert beam.items == exact.items and sorted(beam.items) == ITEMS
    ex = serialize.serialize(toy_dataset()["test"][0], s)[0]
    assert serialize.parse(ex.target, s).item == "10" and "<BOI><a_0><EOI>" in ex.target


# ----------------------------------------------------------------------------- hold-out
def test_holdout_is_seeded_and_only_from_test_targets():
    ds = toy_dataset()
    assert coldstart.target_items(ds) == ["10", "12", "13"]  # not 15 (user turn), not 99
    assert coldstart.holdout_items(ds, 0.0) == frozenset()
    assert coldstart.holdout_items(ds, 1.0) == frozenset({"10", "12", "13"})
    draws = [coldstart.holdout_items(ds, 0.5, seed) for seed in range(20)]
    assert all(len(d) == 2 and d <= {"10", "12", "13"} for d in draws)  # round(1.5) = 2
    assert draws == [coldstart.holdout_items(ds, 0.5, seed) for seed in range(20)]
    assert len(set(draws)) > 1
    with pytest.raises(ValueError, match="fraction"):
        coldstart.holdout_items(ds, 1.5)


def test_remove_items_drops_exactly_the_dialogs_that_mention_them():
    ds = toy_dataset()
    train = ds["train"]
    ids = lambda dialogs: [d.id for d in dialogs]  # noqa: E731
    assert ids(coldstart.remove_items(train, {"12"})) == ["t0", "t2", "t3"]  # a user mention
    assert ids(coldstart.remove_items(train, {"13"})) == ["t0", "t1", "t2"]  # '@13' in text only
    assert ids(coldstart.remove_items(train, {"10", "11"})) == ["t1", "t3"]
    assert ids(coldstart.remove_items(train, set())) == ["t0", "t1", "t2", "t3"]
    assert ids(coldstart.remove_items(train, {"14"})) == ["t0", "t1", "t2", "t3"]


def test_run_trains_without_the_held_out_items():
    ds = toy_dataset()
    cfg = {"profile": "smoke", "dataset": "toy", "variant": "coldstart_gcrs", "format": "gcrs",
           "train_splits": ["train"], "holdout": {"fraction": 1.0, "seed": 0}}
    assert [d.id for d in run.training_dialogs(config.resolve(cfg), ds)] == ["t2"]  # 10, 12, 13 held out
    assert [d.id for d in run.training_dialogs(config.resolve({**cfg, "max_dialogs": 0}), ds)] == []
    plain = {**cfg, "holdout": None, "max_dialogs": 3}
    assert [d.id for d in run.training_dialogs(config.resolve(plain), ds)] == ["t0", "t1", "t2"]
    assert run.config_hash(cfg) != run.config_hash({**cfg, "holdout": {"fraction": 0.5, "seed": 0}})
    s = coldstart.holdout_summary(config.resolve({**cfg, "max_dialogs": None}), ds)
    assert (s["heldout_items"], s["removed_dialogs"], s["train_dialogs"]) == (3, 3, 1)


# ----------------------------------------------------------------------------- metrics
def case(item: str, context=()) -> serialize.Example:
    return serialize.Example("d", 1, "gcrs", "", "", "rec", item, tuple(context), "")


def test_split_ranks_gives_hand_computed_recalls():
    cases = [case("A"), case("A"), case("B"), case("C"), case("D", ["D"])]
    ranks = [1, None, 3, 12, 25]
    out = coldstart.split_ranks(cases, ranks, {"A"})
    assert set(out) == {"heldout", "seen"}
    h, s = out["heldout"], out["seen"]
    assert h["n_cases"] == 2 and s["n_cases"] == 3
    assert h["metrics"]["recall@1"] == 0.5 and h["metrics"]["recall@20"] == 0.5
    assert h["metrics"]["mrr@5"] == 0.5 and h["repeat_share"] == 0.0
    assert s["metrics"]["recall@1"] == 0.0 and s["metrics"]["recall@5"] == pytest.approx(1 / 3)
    assert s["metrics"]["recall@10"] == pytest.approx(1 / 3)
    assert s["metrics"]["recall@20"] == pytest.approx(2 / 3)
    assert s["metrics"]["mrr@5"] == pytest.approx(1 / 9)
    assert s["repeat_share"] == pytest.approx(1 / 3) and set(s["ci95"]) == set(s["metrics"])

    out = coldstart.split_ranks(cases, ranks, {"A"}, trained={"B", "A"})
    assert [out[g]["n_cases"] for g in ("heldout", "seen", "unseen")] == [2, 1, 2]
    assert out["seen"]["metrics"]["recall@5"] == 1.0 and out["seen"]["metrics"]["recall@1"] == 0.0
    assert out["unseen"]["metrics"]["recall@10"] == 0.0
    assert out["unseen"]["metrics"]["recall@20"] == 0.5 and out["unseen"]["repeat_share"] == 0.5

    empty = coldstart.split_ranks(cases[2:], ranks[2:], {"A"})["heldout"]
    assert empty == {"n_cases": 0, "metrics": {}, "ci95": {}, "repeat_share": None}
    with pytest.raises(ValueError, match="ranks"):
        coldstart.split_ranks(cases, ranks[:2], {"A"})
