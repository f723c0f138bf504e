"""Item–ID alignment instances (crslib.format.align): golden prompts and targets on a toy catalog,
escaping, the seeded mix, the config block (and that it leaves earlier runs' hashes alone), and
that a tiny model trained with them learns which SID a title stands for."""
import json
from pathlib import Path

import pytest
import torch

from crslib import config
from crslib.config import AlignConfig, ConfigError, TrainConfig
from crslib.data import Catalog, Dialog, Item, Turn
from crslib.decoding import beam_search
from crslib.format import align, serialize
from crslib.studies.bench import random_sids
from crslib.training import train
from crslib.training.model import load_tokenizer, tiny_model

REPO = Path(__file__).resolve().parents[1]
ITEMS = [str(100 + i) for i in range(12)]
CATALOG = Catalog([Item(iid, f"Film {k}", str(1980 + k), ("horror", "comedy") if k % 2 else (),
                        plot=f"A story about thing number {k} and what it did next.")
                   for k, iid in enumerate(ITEMS)])
SIDS = random_sids(ITEMS, 3, 4, 0)


def test_item_text_cuts_the_plot_at_a_word():
    it = Item("1", "Alien", "1979", ("horror", "sci-fi"), plot="In space no one can hear you scream.")
    assert align.item_text(it, 100) == "Alien (1979) | horror, sci-fi | In space no one can hear you scream."
    assert align.item_text(it, 15) == "Alien (1979) | horror, sci-fi | In space no one…"
    assert align.item_text(it, 0) == "Alien (1979) | horror, sci-fi"
    assert align.item_text(Item("2", "Up"), 50) == "Up"


def test_instances_golden():
    cfg = AlignConfig(tasks=("text_to_sid", "sid_to_text", "genre_to_sid"), plot_chars=12)
    it = CATALOG["101"]
    m = serialize.mention("101", SIDS)
    a = align.instance("text_to_sid", it, SIDS, cfg)
    assert a.prompt == "User: Item: Film 1 (1981) | horror, comedy | A story…\nAssistant:"
    assert a.target == m and a.mode == "rec" and a.item == "101"
    b = align.instance("sid_to_text", it, SIDS, cfg)
    assert b.prompt == f"User: Which movie is {m}?\nAssistant:" and b.target == "Film 1 (1981)"
    c = align.instance("genre_to_sid", it, SIDS, cfg)
    assert c.target == m and c.prompt in ("User: Recommend a horror movie.\nAssistant:",
                                          "User: Recommend a comedy movie.\nAssistant:")
    assert align.instance("genre_to_sid", CATALOG["100"], SIDS, cfg) is None  # no genre
    with pytest.raises(ValueError, match="unknown alignment task"):
        align.instance("nope", it, SIDS, cfg)
    # the encoded instance is prompt + target + EOS, loss on the target only
    tok = load_tokenizer("tiny")
    serialize.add_special_tokens(tok, None, SIDS)
    enc = serialize.encode(a, tok)
    n_target = len(tok(a.target, add_special_tokens=False)["input_ids"]) + 1
    assert sum(x != -100 for x in enc["labels"]) == n_target


def test_item_text_is_escaped():
    it = Item("100", "<MODE=REC> Attack", "2001")
    cfg = AlignConfig(tasks=("text_to_sid", "sid_to_text"))
    assert "<\\MODE=REC>" in align.instance("text_to_sid", it, SIDS, cfg).prompt
    tgt = align.instance("sid_to_text", it, SIDS, cfg).target
    assert tgt == "<\\MODE=REC> Attack (2001)" and serialize.unescape(tgt) == "<MODE=REC> Attack (2001)"


def test_pool_and_mix():
    cfg = AlignConfig(tasks=("text_to_sid", "genre_to_sid"), ratio=0.5, seed=3)
    pool = align.pool(CATALOG, SIDS, cfg)
    assert len(pool) == 12 + 6  # genre instances only for the six items with genres
    # the chosen genre depends on the item and seed, not on the catalog's order
    rev = align.pool(Catalog(list(CATALOG)[::-1]), SIDS, cfg)
    assert {(e.item, e.prompt) for e in rev} == {(e.item, e.prompt) for e in pool}
    few = align.mix(pool, 20, cfg)
    assert len(few) == 10 and len({id(e) for e in few}) == 10  # without replacement
    assert [e.prompt for e in few] == [e.prompt for e in align.mix(pool, 20, cfg)]
    assert [e.prompt for e in few] != [e.prompt for e in align.mix(pool, 20, AlignConfig(
        tasks=cfg.tasks, ratio=0.5, seed=4))]
    many = align.mix(pool, 50, cfg)  # 25 asked of 18: the whole pool, then 7 more
    assert len(many) == 25 and len({id(e) for e in many[:18]}) == 18
    with pytest.raises(ValueError, match="no alignment instance"):
        align.mix([], 10, cfg)


def test_the_pool_can_keep_only_the_items_the_training_dialogs_mention():
    dialogs = [Dialog("d1", [Turn("user", "I liked @103", ()), Turn("assistant", "Try it", ("107",))]),
               Dialog("d2", [Turn("user", "and @999?", ())])]  # 999: not in the catalog
    cfg = AlignConfig(tasks=("text_to_sid", "genre_to_sid"), items="dialogs")
    assert align.item_ids(CATALOG, dialogs, cfg) == ["103", "107"]  # catalog order
    assert align.item_ids(CATALOG, dialogs, AlignConfig()) == ITEMS
    assert align.item_ids(CATALOG, [], cfg) == []
    pool = align.pool(CATALOG, SIDS, cfg, ids=align.item_ids(CATALOG, dialogs, cfg))
    assert [(e.item, "Item: " in e.prompt) for e in pool] == [
        ("103", True), ("103", False), ("107", True), ("107", False)]
    with pytest.raises(ValueError, match="no alignment instance"):
        align.mix(align.pool(CATALOG, SIDS, cfg, ids=[]), 10, cfg)


def test_align_config_is_checked_and_leaves_earlier_hashes_alone():
    for bad, msg in [({"tasks": []}, "distinct"), ({"tasks": ["x"]}, "unknown task"),
                     ({"ratio": 0}, "above 0"), ({"plot_chars": -1}, "0 or more"),
                     ({"items": "all"}, r"train.align.items must be one of \['catalog', 'dialogs'\]")]:
        with pytest.raises(ConfigError, match=msg):
            AlignConfig(**bad)
    path = REPO / "crslib" / "configs" / "cpu-inspired-gcrs.json"
    shipped = json.loads((REPO / "runs" / "cpu" / "inspired" / "gcrs" / "config.json").read_text())
    assert config.config_hash(config.load(path)) == shipped["config_hash"]
    d = json.loads(path.read_text())
    d["train"]["align"] = {"ratio": 0.25}
    rc = config.resolve(d)
    assert rc.train.align == AlignConfig(ratio=0.25)
    assert config.config_hash(rc) != shipped["config_hash"]
    assert config.resolve(rc.to_dict()) == rc
    # items at its default is left out of the identity (shipped alignment runs keep their hash)
    assert "items" not in rc.identity()["train"]["align"]
    d["train"]["align"] = {"ratio": 0.25, "items": "catalog"}
    assert config.config_hash(d) == config.config_hash(rc)
    d["train"]["align"] = {"ratio": 0.25, "items": "dialogs"}
    assert config.config_hash(d) != config.config_hash(rc)
    for run_dir in sorted((REPO / "runs" / "smollm2").glob("*/gcrs_align*/config.json")):
        saved = json.loads(run_dir.read_text())
        assert config.config_hash(saved) == saved["config_hash"], run_dir
    d["train"]["align"] = {"ratio": "lots"}
    with pytest.raises(ConfigError, match="train.align.ratio must be a number"):
        config.resolve(d, "x.json")


def test_a_tiny_model_learns_which_sid_a_title_stands_for(tmp_path):
    torch.set_num_threads(1)
    tok = load_tokenizer("tiny")
    new_ids = sorted(serialize.add_special_tokens(tok, None, SIDS).values())
    model = tiny_model(len(tok), seed=0, pad_token_id=tok.pad_token_id)
    dialogs = [Dialog("d", [Turn("user", "hello", ()), Turn("assistant", "hi", ())])]
    cfg = TrainConfig(lr=5e-3, warmup_steps=10, max_steps=150, batch_tokens=800,
                            output_vocab="targets", checkpoint_every=10_000,
                            align=AlignConfig(tasks=("text_to_sid",), ratio=12.0, plot_chars=0))
    with pytest.raises(ValueError, match="needs the catalog"):
        train.train(model, tok, SIDS, dialogs, cfg, tmp_path / "x", new_ids, progress=False)
    summary = train.train(model, tok, SIDS, dialogs, cfg, tmp_path / "a", new_ids,
                          progress=False, catalog=CATALOG)
    assert summary["align_instances"] == 12
    written = json.loads((tmp_path / "a" / "config.json").read_text())
    assert written["instances"] == 1 + 12
    probes = [align.instance("text_to_sid", it, SIDS, cfg.align) for it in CATALOG]
    prompts = [serialize.prompt_ids(ex, tok) for ex in probes]
    prompts = [p + tok(serialize.BOI, add_special_tokens=False)["input_ids"] for p in prompts]
    ranked = beam_search.recommend(model, tok, prompts, SIDS, k=1, num_beams=12, batch_size=12)
    assert sum(r.items[0] == ex.item for r, ex in zip(ranked, probes)) >= 11
