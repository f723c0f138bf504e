"""Training on packed dialogs: the loss falls, and a toy world whose next item is a
deterministic function of the context is learned (Recall@1 > 0.9) through the whole path:
serializer -> packing -> training -> constrained beam search."""
import copy
import dataclasses
import json

import pytest
import torch

from crslib.config import TrainConfig
from crslib.data import Dialog, Turn
from crslib.decoding import beam_search
from crslib.format import serialize
from crslib.studies.bench import random_sids
from crslib.training import batches, newrows, objectives, runtime, train, warmup
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


@pytest.fixture(scope="module")
def world():
    torch.set_num_threads(1)
    sids = random_sids(ITEMS, 3, 4, 0)
    tok = load_tokenizer("tiny")
    new = serialize.add_special_tokens(tok, None, sids)
    model = tiny_model(len(tok), seed=0, pad_token_id=tok.pad_token_id)
    return sids, tok, model, sorted(new.values())


def test_toy_world_is_learned(world, tmp_path):
    sids, tok, model, new_ids = world
    cfg = TrainConfig(lr=5e-3, warmup_steps=10, epochs=60, batch_tokens=600,
                            output_vocab="targets", log_every=5, checkpoint_every=10_000)
    summary = train.train(model, tok, sids, toy_world(64, 0), cfg, tmp_path, new_ids,
                          progress=False)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"] / 3
    assert json.loads((tmp_path / "config.json").read_text())["train"]["lr"] == 5e-3
    examples = [ex for ex in serialize.serialize_all(toy_world(40, 1), sids) if ex.mode == "rec"]
    prompts = [serialize.rec_prompt_ids(ex, tok) for ex in examples]
    ranked = beam_search.recommend(model, tok, prompts, sids, k=5, num_beams=8, batch_size=16)
    hits = [r.items[0] == ex.item for r, ex in zip(ranked, examples)]
    assert sum(hits) / len(hits) > 0.9, summary
    # only the new rows of the embedding moved
    assert summary["steps"] > 0 and summary["instances"] == 64 * 2


def test_only_new_rows_train_and_resume_continues(world, tmp_path):
    sids, tok, _, new_ids = world
    model = tiny_model(len(tok), seed=1, pad_token_id=tok.pad_token_id)
    before = model.get_input_embeddings().weight.detach().clone()
    cfg = TrainConfig(lr=1e-2, warmup_steps=1, max_steps=4, batch_tokens=1024,
                            checkpoint_every=2, output_vocab="targets")
    train.train(model, tok, sids, toy_world(8, 0), cfg, tmp_path, new_ids, progress=False)
    after = model.get_input_embeddings().weight.detach()
    first = min(new_ids)
    assert torch.equal(before[:first], after[:first])
    assert not torch.equal(before[first:], after[first:])
    # resuming a finished run does no more steps; a different config is refused
    s = train.train(model, tok, sids, toy_world(8, 0), cfg, tmp_path, new_ids, progress=False)
    assert s["steps"] == 4
    with pytest.raises(ValueError, match="different config"):
        train.train(model, tok, sids, toy_world(8, 0), TrainConfig(lr=0.5, max_steps=4),
                    tmp_path, new_ids, progress=False)


def test_restricted_vocab_loss_refuses_unknown_targets(world):
    sids, tok, model, new_ids = world
    from crslib.format import packing
    w = packing.pack_dialog(toy_world(1, 0)[0], sids, tok, "gcrs", 768)
    batch = packing.collate(w, tok.pad_token_id)
    emb = newrows.Embeddings(model, new_ids)
    with pytest.raises(ValueError, match="outside the restricted"):
        newrows.packed_loss(model, emb, batch, torch.tensor(sorted(new_ids)))
    full, _ = newrows.packed_loss(model, emb, batch, None)
    assert torch.isfinite(full)


def test_new_token_weight_is_a_weighted_mean(world):
    sids, tok, model, new_ids = world
    from crslib.format import packing
    w = packing.pack_dialog(toy_world(1, 0)[0], sids, tok, "gcrs", 768)
    batch = packing.collate(w, tok.pad_token_id)
    emb = newrows.Embeddings(model, new_ids)
    with torch.no_grad():
        h = model.get_decoder()(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                                attention_mask=batch["attention_mask"]).last_hidden_state
        ce = torch.nn.functional.cross_entropy(
            emb.logits(h[batch["loss_rows"], batch["loss_src"]]), batch["loss_tgt"],
            reduction="none")
        is_new = batch["loss_tgt"] >= min(new_ids)
        assert 0 < int(is_new.sum()) < len(ce)
        expected = (ce[~is_new].sum() + 3 * ce[is_new].sum()) / (int((~is_new).sum()) + 3 * int(is_new.sum()))
        got, n = newrows.packed_loss(model, emb, batch, None, new_token_weight=3.0)
        plain, _ = newrows.packed_loss(model, emb, batch, None)
    assert n == len(ce)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(plain, ce.mean(), atol=1e-6)


def test_schedule_is_a_function_of_the_step_alone():
    f = train.lr_lambda(TrainConfig(warmup_steps=10), total=110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5)  # half-way through the cosine
    assert f(110) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(TypeError):  # no clock to pass: a busy machine trains the same model
        train.lr_lambda(TrainConfig(), 10, lambda: 0.0)


def test_time_limit_is_a_loud_safety_stop_and_the_run_resumes(world, tmp_path):
    sids, tok, model, new_ids = world
    cfg = TrainConfig(lr=5e-3, warmup_steps=2, max_steps=6, batch_tokens=600,
                            output_vocab="targets", log_every=1, checkpoint_every=10_000,
                            time_limit_minutes=1e-9)
    with pytest.raises(train.TrainingTimeLimit, match=r"after 1 of 6 steps.*NOT finished") as e:
        train.train(copy.deepcopy(model), tok, sids, toy_world(8, 0), cfg, tmp_path, new_ids,
                    progress=False)
    assert str(tmp_path) in str(e.value)
    assert (tmp_path / "checkpoint" / "state.pt").is_file()
    resumed = train.train(copy.deepcopy(model), tok, sids, toy_world(8, 0),
                          dataclasses.replace(cfg, time_limit_minutes=None), tmp_path, new_ids,
                          progress=False)
    assert resumed["steps"] == resumed["steps_total"] == 6
    fresh = train.train(copy.deepcopy(model), tok, sids, toy_world(8, 0),
                        dataclasses.replace(cfg, time_limit_minutes=None), tmp_path / "fresh",
                        new_ids, progress=False)
    assert resumed["final_loss"] == pytest.approx(fresh["final_loss"], rel=1e-5)


def test_aux_formats_add_their_windows(world, tmp_path):
    sids, tok, model, new_ids = world
    dialogs = toy_world(6, 0)
    main = batches.build_windows(dialogs, sids, tok, "gcrs", 768)
    aux = batches.build_windows(dialogs, sids, tok, "tiger", 768)
    assert len(aux) == 6  # one tiger example (the recommended item) per toy dialog
    cfg = TrainConfig(max_steps=1, batch_tokens=4096, output_vocab="targets",
                            aux_formats=("tiger",))
    train.train(model, tok, sids, dialogs, cfg, tmp_path / "a", new_ids, progress=False)
    written = json.loads((tmp_path / "a" / "config.json").read_text())
    assert written["windows"] == len(main) + len(aux)
    assert written["instances"] == sum(w.n_branches for w in main + aux)
    with pytest.raises(ValueError, match="repeats the main format"):
        train.train(model, tok, sids, dialogs, TrainConfig(max_steps=1, aux_formats=("gcrs",)),
                    tmp_path / "b", new_ids, progress=False)


def test_copy_batch_repeats_its_first_half():
    g = torch.Generator().manual_seed(0)
    pool, new = torch.arange(10, 20), torch.arange(100, 104)
    b = warmup.copy_batch(pool, new, 3, 8, g)
    assert b.shape == (3, 16) and torch.equal(b[:, :8], b[:, 8:])
    assert set(b.unique().tolist()) <= set(pool.tolist()) | set(new.tolist())
    assert (b >= 100).any() and (b < 100).any()


def test_copy_warmup_learns_and_is_not_repeated_on_resume(world, tmp_path):
    sids, tok, _, new_ids = world
    model = tiny_model(len(tok), seed=2, pad_token_id=tok.pad_token_id)
    cfg = TrainConfig(lr=5e-3, warmup_steps=5, max_steps=2, batch_tokens=1024,
                            copy_warmup_steps=60, output_vocab="targets")
    s = train.train(model, tok, sids, toy_world(8, 0), cfg, tmp_path, new_ids, progress=False)
    warm = s["copy_warmup"]
    assert warm["steps"] == 60 and warm["final_loss"] < warm["first_loss"] - 0.5
    assert s["seconds"] >= warm["seconds"]  # the warm-up counts against the time budget
    again = train.train(model, tok, sids, toy_world(8, 0), cfg, tmp_path, new_ids, progress=False)
    assert again["copy_warmup"] == warm and again["steps"] == 2


def test_flush_denormals_context_and_decorator_nest_and_restore():
    tiny = torch.tensor([1e-39], dtype=torch.float32)      # a denormal float32
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush denormals")
    assert (tiny * 1.0).item() != 0.0

    @runtime.flush_denormals()
    def inner():
        return (tiny * 1.0).item()

    with runtime.flush_denormals():
        assert inner() == 0.0
        assert (tiny * 1.0).item() == 0.0                   # still on after the nested exit
    assert (tiny * 1.0).item() != 0.0                       # the default is back


def test_split_step_bounds_groups_and_shares_them_out():
    lengths = [5, 5, 5, 5, 5, 9]
    assert objectives.split_step(range(6), lengths, None) == [[0, 1, 2, 3, 4, 5]]
    assert objectives.split_step(range(6), lengths, 1) == [[i] for i in range(6)]  # too long: alone
    assert objectives.split_step(range(6), lengths, 15) == [[0, 1, 2], [3, 4], [5]]
    assert objectives.split_step([2, 4, 5], lengths, None, parts=2) == [[2], [4, 5]]
    assert objectives.split_step([3], lengths, None, parts=2) == [[3]]  # cannot split one window


def test_micro_batches_give_the_step_gradient_of_one_pass(world):
    from accelerate import Accelerator
    sids, tok, model, new_ids = world
    net = copy.deepcopy(model)
    windows = batches.build_windows(toy_world(12, 3), sids, tok, "gcrs", 768)
    emb = newrows.Embeddings(net, new_ids)
    objective = objectives.TokenObjective(windows, None, tok.pad_token_id, emb.first, 3.0)
    trainable = objectives.Trainable(net, emb, objective)
    params = [p for p in net.parameters() if p.requires_grad] + [emb.inp_rows]
    micro_size = 3 * max(map(len, windows))
    assert len(objectives.split_step(range(len(windows)), [len(w) for w in windows],
                                     micro_size)) > 2
    grads = {}
    for micro in (None, micro_size):
        for p in params:
            p.grad = None
        cfg = TrainConfig(new_token_loss_weight=3.0, micro_batch_tokens=micro)
        loss = objectives.step_backward(Accelerator(), trainable, objective, range(len(windows)),
                                        cfg)
        grads[micro] = (loss, [p.grad.clone() for p in params])
    (l1, g1), (l2, g2) = grads.values()
    assert l1 == pytest.approx(l2, rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(g1, g2))
    batch = objective.batch(range(len(windows)))  # the weight is packed_loss's weighted count
    w = torch.where(batch["loss_tgt"] >= emb.first, 3.0, 1.0).sum()
    assert objective.weight(range(len(windows))) == pytest.approx(float(w))
