"""The decoupled baseline (backbone + item-classification head): a toy world whose next item is
a deterministic function of the context is learned (Recall@1 > 0.9); the packed hidden state of
a branch equals that of its prompt run alone; save -> load keeps the scores; bad configs fail
clearly."""
import json

import pytest
import torch

from crslib import config, cli
from crslib.format import serialize
from crslib.training import decoupled, run, train
from crslib.studies.bench import random_sids
from crslib.data import Dialog, Turn
from crslib.training.model import load_tokenizer, tiny_model

ITEMS = [str(100 + i) for i in range(16)]


def follow(i: int) -> str:
    return ITEMS[(5 * i + 3) % len(ITEMS)]


def toy_world(n: int, seed: int) -> list[Dialog]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n):
        i = int(torch.randint(len(ITEMS), (1,), generator=g))
        out.append(Dialog(str(k), [
            Turn("user", "hello", ()), Turn("assistant", "hi! what do you like?", ()),
            Turn("user", f"I liked @{ITEMS[i]}", (ITEMS[i],)),
            Turn("assistant", f"then watch @{follow(i)}", (follow(i),))]))
    return out


def long_dialog() -> Dialog:
    """Several recommendation turns, one with two items, and chat turns in between."""
    return Dialog("long", [
        Turn("user", "hello there, any good films?", ()),
        Turn("assistant", f"try @{ITEMS[1]} or @{ITEMS[2]}", (ITEMS[1], ITEMS[2])),
        Turn("user", f"seen @{ITEMS[1]}, loved it", (ITEMS[1],)),
        Turn("assistant", "great, what else do you like?", ()),
        Turn("user", "something darker please", ()),
        Turn("assistant", f"then @{ITEMS[7]}", (ITEMS[7],)),
        Turn("user", "and a comedy?", ()),
        Turn("assistant", f"@{ITEMS[9]} is fun", (ITEMS[9],))])


@pytest.fixture(scope="module")
def world():
    torch.set_num_threads(1)
    sids = random_sids(ITEMS, 3, 4, 0)
    tok = load_tokenizer("tiny")
    new = serialize.add_special_tokens(tok, None, sids)
    return sids, tok, sorted(new.values())


def recommender(world, seed=0) -> decoupled.DecoupledRecommender:
    sids, tok, _ = world
    lm = tiny_model(len(tok), seed=seed, pad_token_id=tok.pad_token_id)
    return decoupled.DecoupledRecommender(lm, tok, sids.item_ids, max_context_tokens=768)


def test_toy_world_is_learned(world, tmp_path):
    sids, tok, new_ids = world
    rec = recommender(world)
    cfg = train.TrainConfig(fmt="sid", lr=5e-3, warmup_steps=10, epochs=20, batch_tokens=600,
                            log_every=5, checkpoint_every=10_000)
    summary = decoupled.fit(rec, sids, toy_world(64, 0), cfg, tmp_path, new_ids, progress=False)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"] / 3 and log[-1]["examples_per_s"] > 0
    assert summary["instances"] == 64  # one recommendation per toy dialog; chat turns unused
    cases = [ex for ex in serialize.serialize_all(toy_world(40, 1), sids) if ex.mode == "rec"]
    ranks = rec.ranks(cases, "community")
    assert sum(r == 1 for r in ranks) / len(ranks) > 0.9, summary


def test_resume_continues_and_a_different_config_is_refused(world, tmp_path):
    sids, tok, new_ids = world
    cfg = train.TrainConfig(fmt="sid", lr=1e-2, warmup_steps=1, max_steps=4, batch_tokens=300,
                            checkpoint_every=2)
    s = decoupled.fit(recommender(world), sids, toy_world(8, 0), cfg, tmp_path, new_ids,
                      progress=False)
    assert s["steps"] == 4
    s = decoupled.fit(recommender(world), sids, toy_world(8, 0), cfg, tmp_path, new_ids,
                      progress=False)
    assert s["steps"] == 4  # finished: no more steps
    with pytest.raises(ValueError, match="different config"):
        decoupled.fit(recommender(world), sids, toy_world(8, 0),
                      train.TrainConfig(fmt="sid", lr=0.5, max_steps=4), tmp_path, new_ids,
                      progress=False)


def test_copy_warmup_runs_once_and_aux_formats_are_refused(world, tmp_path):
    sids, tok, new_ids = world
    cfg = train.TrainConfig(fmt="sid", lr=5e-3, warmup_steps=1, max_steps=2, batch_tokens=300,
                            copy_warmup_steps=5)
    s = decoupled.fit(recommender(world), sids, toy_world(8, 0), cfg, tmp_path, new_ids,
                      progress=False)
    assert s["copy_warmup"]["steps"] == 5 and s["seconds"] >= s["copy_warmup"]["seconds"]
    again = decoupled.fit(recommender(world), sids, toy_world(8, 0), cfg, tmp_path, new_ids,
                          progress=False)
    assert again["copy_warmup"] == s["copy_warmup"] and again["steps"] == 2
    with pytest.raises(ValueError, match="aux_formats must be empty"):
        decoupled.fit(recommender(world), sids, toy_world(8, 0),
                      train.TrainConfig(fmt="sid", max_steps=1, aux_formats=("tiger",)),
                      tmp_path / "aux", new_ids, progress=False)


def test_branch_labels_and_packed_states_equal_prompts_alone(world):
    sids, tok, _ = world
    rec = recommender(world, seed=1)
    dialogs = [long_dialog(), *toy_world(3, 2)]
    budget = 40  # cuts the long dialog into several windows
    windows, labels = decoupled.build_windows(dialogs, sids, tok, budget)
    cases = [ex for ex in serialize.serialize_all(dialogs, sids) if ex.mode == "rec"]
    assert len(windows) > len(dialogs)
    assert [sids.item_ids[i] for lab in labels for _, i in lab] == [ex.item for ex in cases]
    with torch.no_grad():
        packed, _ = decoupled.packed_states(rec, windows, labels)
        prompts = [serialize.prompt_ids(ex, tok, budget) for ex in cases]
        alone = torch.cat([rec.prompt_states([p]) for p in prompts])
        batched = rec.prompt_states(prompts)  # right padding: same states
    assert torch.allclose(packed, alone, atol=1e-5)
    assert torch.allclose(batched, alone, atol=1e-5)
    one_by_one = torch.cat([rec.scores([p]) for p in prompts])
    assert torch.allclose(rec.scores(prompts, batch_size=3), one_by_one, atol=1e-5)


def test_ranks_are_exact_and_paper_keeps_the_top_50(world):
    sids, tok, _ = world
    extra = [f"x{k}" for k in range(45)]  # items ahead of the toy ones
    lm = tiny_model(len(tok), seed=0, pad_token_id=tok.pad_token_id)
    rec = decoupled.DecoupledRecommender(lm, tok, extra + ITEMS)
    cases = [ex for ex in serialize.serialize_all(toy_world(8, 3), sids) if ex.mode == "rec"]
    with torch.no_grad():
        rec.head.weight.zero_()
        rec.head.bias.copy_(-torch.arange(len(rec.item_ids), dtype=torch.float))  # k ranks k+1
        rec.head.bias[-1] = rec.head.bias[-2]  # a tie: catalog order decides
    exact = [46 + ITEMS.index(ex.item) for ex in cases]
    assert rec.ranks(cases, "community") == exact
    assert rec.ranks(cases, "paper") == [r if r <= 50 else None for r in exact]
    assert any(r > 50 for r in exact) and any(r <= 50 for r in exact)
    # the top list is the same order: the first items by bias, the tie in catalog order
    order = extra + ITEMS
    assert rec.top(cases[:2], 47) == [order[:47]] * 2
    assert rec.top(cases[:1], len(order))[0][-2:] == ITEMS[-2:]
    with pytest.raises(ValueError, match="unknown protocol"):
        rec.ranks(cases, "beam")


def test_save_load_gives_identical_scores(world, tmp_path):
    sids, tok, _ = world
    rec = recommender(world, seed=2)
    with torch.no_grad():
        rec.head.bias.normal_()
    cfg = {"profile": "smoke", "dataset": "toy", "variant": "decoupled", "format": "gcrs",
           "ranker": "item_head", "sids": {},
           "model": {"kind": "compact"}, "train": {"seed": 0}, "eval": {"max_context_tokens": 64}}
    decoupled.save_decoupled(tmp_path, rec, sids, config.resolve(cfg))
    rec2, tok2, sids2, cfg2 = run.load_run(tmp_path)  # dispatches to load_decoupled
    assert isinstance(rec2, decoupled.DecoupledRecommender)
    assert config.resolve(cfg2) == config.resolve(cfg)
    assert sids2.item_ids == sids.item_ids and rec2.max_context_tokens == 64
    cases = [ex for ex in serialize.serialize_all(toy_world(6, 4), sids) if ex.mode == "rec"]
    prompts = [serialize.prompt_ids(ex, tok2, 64) for ex in cases]
    assert prompts == [serialize.prompt_ids(ex, tok, 64) for ex in cases]
    assert torch.equal(rec.eval().scores(prompts), rec2.scores(prompts))
    with pytest.raises(FileNotFoundError, match="not a finished decoupled run"):
        decoupled.load_decoupled(tmp_path / "nothing")
    # the Recommender interface: load, save again, load again: the same ranks
    rec3 = decoupled.DecoupledRecommender.load(tmp_path)
    rec3.save(tmp_path / "again")
    rec4 = decoupled.DecoupledRecommender.load(tmp_path / "again")
    assert rec4.ranks(cases, "community") == rec2.ranks(cases, "community")
    with pytest.raises(ValueError, match="sids and config"):
        recommender(world).save(tmp_path / "unsaved")


def test_an_unknown_ranker_is_refused_before_anything_trains(tmp_path, capsys):
    cfg = json.loads(run.config_path("smoke", "inspired", "decoupled").read_text())
    assert cfg["ranker"] == "item_head"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**cfg, "ranker": "item_haed"}))
    with pytest.raises(ValueError, match=r"bad\.json: ranker must be one of .*'item_head'"):
        run.load_config(path)
    with pytest.raises(ValueError, match="ranker must be one of"):
        cli.main(["train", "--config", str(path), "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()
