"""The GCRS backbone: a pretrained causal LM (:mod:`crslib.pretrained`, by name) or a compact
one over its vocabulary, with the GCRS tokens' rows initialised, optional LoRA, and saving and
loading of the trained weights.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from crslib import config, paths, report
from crslib.ids.semantic_ids import sid_token
# the pretrained LMs by name live in crslib.pretrained; their names stay reachable here
from crslib.pretrained import (BACKBONES, SMOLLM2_GGUF, TINY_CONFIG, default_device,  # noqa: F401
                               load_backbone, load_tokenizer, process_state, smollm2_gguf,
                               tiny_model)


def state_dict_hash(module: torch.nn.Module) -> str:
    """sha256 (16 hex digits) over the names, dtypes, shapes and bytes of ``module``'s state
    dict: equal exactly when the weights are bitwise equal."""
    import hashlib
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- GCRS set-up
COMPACT_DEFAULTS = dict(layers=2, hidden=256, heads=4, source="smollm2-135m")
_CONTROL_INIT_WORDS = {"<BOI>": " movie", "<EOI>": " .", "<RESP>": ":", "<MODE=REC>": " recommend",
                       "<MODE=CHAT>": " chat"}


def pca_embeddings(weight: torch.Tensor, dim: int, std: float = 0.02) -> torch.Tensor:
    """Project token embeddings on their top ``dim`` principal directions, rescaled to ``std``."""
    w = weight.detach().float()
    mu = w.mean(0)
    _, _, vh = torch.linalg.svd(w[::4] - mu, full_matrices=False)  # every 4th row: same basis, 4x cheaper
    z = (w - mu) @ vh[:dim].T
    return z / z.std() * std


def compact_model(tokenizer, layers: int = 2, hidden: int = 256, heads: int = 4,
                  source: str = "smollm2-135m", seed: int = 0):
    """The ``cpu`` profile's backbone: a small ``LlamaForCausalLM`` over ``source``'s vocabulary
    whose token embeddings are ``source``'s pretrained ones projected to ``hidden`` dimensions
    (PCA), so word meaning comes pretrained while a step costs a few MFLOP per token.
    Transformer weights start random (seeded); the vocabulary rows are frozen by training.
    """
    from transformers import LlamaConfig, LlamaForCausalLM
    projected = projected_embeddings(source, hidden)
    llama_config = LlamaConfig(
        vocab_size=projected.shape[0], hidden_size=hidden, intermediate_size=3 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=4096, tie_word_embeddings=True, rope_theta=10000.0,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    llama_config._attn_implementation = "sdpa"
    llama_config.gcrs_compact = {"source": source}  # saved compactly (see save_compact)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(llama_config)
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(projected)
    return model.eval()


def projected_embeddings(source: str, hidden: int) -> torch.Tensor:
    """``pca_embeddings`` of ``source``'s token embeddings, cached on disk (``$CRSLIB_CACHE/
    compact/``): loading a backbone to project its embeddings costs tens of seconds, the
    cached matrix a fraction of one. The cache file is written atomically."""
    path = paths.cache_dir() / "compact" / f"{source.replace('/', '__')}-pca{hidden}.pt"
    if path.is_file():
        return torch.load(path)
    src, _ = load_backbone(source)
    z = pca_embeddings(src.get_input_embeddings().weight, hidden).contiguous()
    del src
    with report.atomic(path) as tmp:
        torch.save(z, tmp)
    return z


@torch.no_grad()
def init_new_rows(model, tokenizer, sids, catalog=None, seed: int = 0) -> None:
    """Start the added tokens from meaningful points instead of noise (cheap, and it speeds up
    learning). Control tokens get the embedding of a related word. A SID token ``<l_c>`` gets,
    at the typical norm of a word embedding, the sum of three unit directions: how the mean
    title embedding of the items with level-l code c *differs from the level's average* (their
    content), a seeded random direction (so that no two codes start alike: the raw title means
    of ~100 items each are nearly parallel, cosine 0.99 on ReDial, which leaves codes — tied
    input and output rows — indistinguishable and copying them unlearnable), and a direction
    shared by the level (so the model can tell levels apart).
    """
    emb = model.get_input_embeddings().weight
    def mean_of(text: str) -> torch.Tensor:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id]
        return emb[ids].float().mean(0)
    for tok, word in _CONTROL_INIT_WORDS.items():
        emb[tokenizer.convert_tokens_to_ids(tok)] = mean_of(word)
    if catalog is None:
        return
    titles = torch.stack([mean_of(" " + catalog[i].title) for i in sids.item_ids])
    codes = torch.as_tensor(sids.codes, device=emb.device)
    first = tokenizer.convert_tokens_to_ids("<BOI>")
    scale = emb[:first].float().norm(dim=1).median()
    gen = torch.Generator().manual_seed(seed)
    unit = lambda v: v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # noqa: E731
    for level in range(sids.levels):
        means = torch.stack([titles[codes[:, level] == c].mean(0) if (codes[:, level] == c).any()
                             else titles.mean(0) for c in range(sids.codebook_size)])
        content = unit(means - means.mean(0))
        noise = unit(torch.randn(sids.codebook_size, emb.shape[1], generator=gen)).to(emb.device)
        shared = 0.5 * unit(torch.randn(emb.shape[1], generator=gen)).to(emb.device)
        rows = scale * unit(content + noise + shared)
        for c in range(sids.codebook_size):
            emb[tokenizer.convert_tokens_to_ids(sid_token(level, c))] = rows[c].to(emb.dtype)
    out = model.get_output_embeddings()
    if out is not None and out.weight.data_ptr() != emb.data_ptr():
        first = tokenizer.convert_tokens_to_ids("<BOI>")
        out.weight[first:] = emb[first:]


def add_lora(model, r: int = 16, alpha: int = 32, dropout: float = 0.05,
             target_modules: str | list[str] = "all-linear", qlora: bool = False):
    """LoRA adapters on all linear layers (paper: r 16, alpha 32, dropout 0.05) through ``peft``.

    The base weights freeze; the new tokens' embedding rows are trained by
    ``crslib.training.train``. ``qlora`` is honoured only when the model was loaded in 4 bit (CUDA +
    bitsandbytes).
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    if qlora and getattr(model, "is_loaded_in_4bit", False):
        # activation checkpointing only when the config asks (train.activation_checkpointing)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def _new_rows_start(model) -> int | None:
    return getattr(model.config, "gcrs_first_new_token", None)


# LoRA adapters are stored in bfloat16: half the bytes of float32 (a shipped SmolLM2 run is
# ~10 MB instead of ~20), so every run the README shows fits the repository. Every result is
# scored from the stored weights (runs are always loaded from disk), never from the float32
# copy that was in memory at the end of training.
ADAPTER_DTYPE = torch.bfloat16
ADAPTER_FILE = "adapter_model.safetensors"


def compact_adapter(folder) -> bool:
    """Rewrite ``folder/adapter_model.safetensors`` with its float32 tensors in
    :data:`ADAPTER_DTYPE`, atomically; False when there is nothing to convert (idempotent)."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    path = Path(folder) / ADAPTER_FILE
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if not any(t.dtype == torch.float32 for t in tensors.values()):
        return False
    with report.atomic(path) as tmp:
        save_file({k: (t.to(ADAPTER_DTYPE) if t.dtype == torch.float32 else t).contiguous()
                   for k, t in tensors.items()}, str(tmp), metadata=meta)
    return True


def save_model(model, folder) -> None:
    """Full model (small backbones) or the LoRA adapter (:data:`ADAPTER_DTYPE`) +
    ``new_embeddings.safetensors``."""
    from safetensors.torch import save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "peft_config"):
        model.save_pretrained(folder)
        compact_adapter(folder)
        # peft writes the resolved target modules ("all-linear") from a set, in an order that
        # changes from process to process; sorted, equal weights give equal files (model_hash)
        config = folder / "adapter_config.json"
        adapter = json.loads(config.read_text())
        if isinstance(adapter.get("target_modules"), list):
            adapter["target_modules"] = sorted(adapter["target_modules"])
            config.write_text(json.dumps(adapter, indent=2, sort_keys=True) + "\n")
        base = model.get_base_model()
        first = _new_rows_start(base)
        rows = {"input": base.get_input_embeddings().weight[first:].detach().contiguous()}
        out = base.get_output_embeddings()
        if out is not None and out.weight.data_ptr() != base.get_input_embeddings().weight.data_ptr():
            rows["output"] = out.weight[first:].detach().contiguous()
        save_file(rows, str(folder / "new_embeddings.safetensors"))
    elif getattr(model.config, "gcrs_compact", None):
        save_compact(model, folder)
    else:
        model.save_pretrained(folder)


COMPACT_FILE = "compact.safetensors"


def save_compact(model, folder: Path) -> None:
    """A compact backbone without its frozen vocabulary: the HF ``config.json`` plus every
    weight except the embedding rows that :func:`projected_embeddings` rebuilds (only the new
    tokens' rows are kept) — a few MB instead of the 50 MB full matrix. Under the
    ``"all"`` embeddings ablation the whole matrix trained, so it is kept."""
    from safetensors.torch import save_file
    first = _new_rows_start(model)
    emb = model.get_input_embeddings().weight
    keep_all = model.config.gcrs_compact.get("embeddings_trained", False)
    tensors = {n: p.detach().contiguous() for n, p in model.state_dict().items()
               if n not in ("model.embed_tokens.weight", "lm_head.weight")}
    tensors["embed_tokens"] = (emb if keep_all else emb[first:]).detach().contiguous()
    model.config.save_pretrained(folder)
    save_file(tensors, str(folder / COMPACT_FILE))


def load_compact(folder: Path):
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig.from_pretrained(folder)
    info = config.gcrs_compact
    tensors = load_file(str(folder / COMPACT_FILE))
    rows = tensors.pop("embed_tokens")
    model = LlamaForCausalLM(config)  # small: plain init, then every weight is overwritten
    if rows.shape[0] == config.vocab_size:
        weight = rows
    else:
        base = projected_embeddings(info["source"], config.hidden_size)
        weight = torch.cat([base[:config.gcrs_first_new_token], rows])
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if unexpected or set(missing) - {"model.embed_tokens.weight", "lm_head.weight"}:
        raise ValueError(f"{folder / COMPACT_FILE}: does not match its config.json "
                         f"(missing {missing}, unexpected {unexpected})")
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(weight)
    model.tie_weights()
    return model


def load_model(folder, rc: config.RunConfig, device: str | torch.device | None = None):
    """Inverse of :func:`save_model`: ``(model, tokenizer)``, the model on ``device`` (default:
    the CPU; a QLoRA run's base is loaded in 4 bit, as it was trained)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder = Path(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    if (folder / "adapter_config.json").is_file():
        from peft import PeftModel
        from safetensors.torch import load_file

        # the base as built for training: a seeded random one (``tiny``) depends on the seed
        base, _ = load_backbone(rc.model.name, seed=rc.train.seed, device=device,
                                load_in_4bit=bool(rc.model.lora and rc.model.lora.qlora))
        first = base.get_input_embeddings().num_embeddings
        base.resize_token_embeddings(len(tok))
        rows = load_file(str(folder / "new_embeddings.safetensors"))
        with torch.no_grad():
            base.get_input_embeddings().weight[first:] = rows["input"]
            if "output" in rows:
                base.get_output_embeddings().weight[first:] = rows["output"]
        base.config.gcrs_first_new_token = first
        model = PeftModel.from_pretrained(base, folder)
    elif (folder / COMPACT_FILE).is_file():
        model = load_compact(folder).to(device or "cpu")
    else:
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=False)
        model = model.to(device or "cpu")
    return model.eval(), tok
