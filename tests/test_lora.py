"""The paper-profile path at small scale: SmolLM2-135M (offline GGUF) + LoRA on all linear
layers + trainable new-token rows, trained a few steps, saved as adapter + new rows, reloaded
with identical predictions."""
import pytest
import torch

from crslib import config
from crslib.training import run, train
from crslib.evaluation import evaluate, recommenders
from crslib.studies.bench import random_sids
from crslib.data import Catalog, Dataset, Item, LoadReport
from test_train import ITEMS, toy_world


@pytest.fixture(scope="module")
def smol():
    from crslib.training.model import smollm2_gguf
    try:
        smollm2_gguf()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    torch.set_num_threads(1)
    sids = random_sids(ITEMS, 3, 4, 0)
    catalog = Catalog(Item(i, f"movie {i}") for i in ITEMS)
    cfg = {"profile": "smoke", "dataset": "toy", "variant": "gcrs", "format": "gcrs", "sids": {},
           "model": {"kind": "hf", "name": "smollm2-135m",
                     "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
           "train": {"seed": 0}}
    cfg = config.resolve(cfg)
    net, tok, new_ids = run.build_model(cfg, sids, catalog)
    return cfg, sids, catalog, net, tok, new_ids


def test_lora_trains_adapters_and_new_rows_only(smol, tmp_path):
    cfg, sids, catalog, net, tok, new_ids = smol
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    base_emb = net.get_input_embeddings().weight.detach().clone()
    tcfg = train.TrainConfig(lr=1e-3, warmup_steps=1, max_steps=3, batch_tokens=512,
                             max_context_tokens=64)
    s = train.train(net, tok, sids, toy_world(4, 0), tcfg, tmp_path / "work", new_ids,
                    progress=False)
    assert s["steps"] == 3 and s["final_loss"] < 20
    emb = net.get_input_embeddings().weight.detach()
    first = min(new_ids)
    assert torch.equal(base_emb[:first], emb[:first]) and not torch.equal(base_emb[first:], emb[first:])
    run.save_run(tmp_path, net, tok, sids, cfg)
    assert (tmp_path / "model" / "adapter_config.json").is_file()
    assert (tmp_path / "model" / "new_embeddings.safetensors").is_file()
    # the adapter is stored in bfloat16: the in-memory weights rounded, and nothing else
    from safetensors.torch import load_file
    stored = load_file(str(tmp_path / "model" / "adapter_model.safetensors"))
    assert stored and all(t.dtype == torch.bfloat16 for t in stored.values())
    net2, tok2, sids2, _ = run.load_run(tmp_path)
    loaded = {n: p for n, p in net2.named_parameters() if "lora_" in n}
    for n, p in net.named_parameters():
        if "lora_" in n:
            assert torch.equal(loaded[n].float(), p.detach().to(torch.bfloat16).float()), n
    ds = Dataset("toy", catalog, {"test": toy_world(3, 1)}, LoadReport())
    cases = evaluate.rec_cases(ds, sids)
    a = recommenders.model_ranks(net.eval(), tok, sids, cases, "paper", num_beams=8)
    b = recommenders.model_ranks(net2, tok2, sids2, cases, "paper", num_beams=8)
    assert a == b  # rounding the adapter to bfloat16 moves no rank on this toy
    again = run.load_run(tmp_path)[0]
    assert recommenders.model_ranks(again, tok2, sids2, cases, "paper", num_beams=8) == b
    from crslib.training import model as M
    assert not M.compact_adapter(tmp_path / "model")  # nothing left to convert
