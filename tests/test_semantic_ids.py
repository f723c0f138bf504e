"""SID statistics, the catalog -> SemanticIDs pipeline, the embedding cache and `crslib ids`."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from crslib.cli import main
from crslib.data import Item
from crslib.ids import encode
from crslib.ids.semantic_ids import (SemanticIDs, build_semantic_ids, code_stats, describe,
                                     embedding_map, items_by_prefix, prefix_groups, prefix_labels)


def toy_items(n: int) -> list[Item]:
    genres = ["comedy", "horror", "drama", "animation"]
    return [Item(str(100 + k), f"Movie {k}", str(1980 + k % 30), (genres[k % 4],),
                 plot=f"A story about {genres[(k * 7) % 4]} number {k}.") for k in range(n)]


# ------------------------------------------------------------------ statistics
def test_code_stats_by_hand():
    s = code_stats([[0, 0], [0, 1], [1, 0], [1, 0]], codebook_size=4)
    assert s["utilization"] == [0.5, 0.5]
    assert s["perplexity"][0] == pytest.approx(2.0)
    assert s["perplexity"][1] == pytest.approx(math.exp(-(0.75 * math.log(0.75)
                                                          + 0.25 * math.log(0.25))))
    assert s["items_per_prefix"] == [
        {"prefix_len": 1, "prefixes": 2, "max": 2, "mean": 2.0},
        {"prefix_len": 2, "prefixes": 3, "max": 2, "mean": 4 / 3}]
    assert s["collisions"] == 1
    json.dumps(s)  # plain JSON


def test_code_stats_extremes():
    one = code_stats(np.zeros((5, 3), dtype=int), codebook_size=8)
    assert one["perplexity"] == [pytest.approx(1.0)] * 3 and one["collisions"] == 4
    even = code_stats(np.arange(8)[:, None], codebook_size=8)
    assert even["utilization"] == [1.0] and even["perplexity"] == [pytest.approx(8.0)]


# ------------------------------------------------------------------ pipeline
@pytest.mark.parametrize("method", ["rqkmeans", "rqvae"])
def test_build_from_embeddings(method, tmp_path):
    items = toy_items(60)
    X = np.random.default_rng(0).normal(size=(60, 12))
    X[1] = X[0]  # identical items must still get distinct SIDs
    params = {"epochs": 3} if method == "rqvae" else {}
    sids = build_semantic_ids(items, method, levels=3, codebook_size=4, seed=7, embeddings=X,
                              **params)
    assert isinstance(sids, SemanticIDs) and len(sids) == 60 and sids.levels == 3
    assert sids.item_ids == [it.id for it in items]
    assert len({tuple(c) for c in sids.codes.tolist()}) == 60
    assert sids.code_of("100") != sids.code_of("101")
    c = sids.config
    assert (c["method"], c["levels"], c["codebook_size"], c["seed"]) == (method, 3, 4, 7)
    assert c["encoder"] == "precomputed" and c["params"]["seed"] == 7
    if method == "rqvae":
        assert c["params"]["epochs"] == 3 and c["params"]["latent_dim"] == 32
    s = sids.stats
    assert s["collisions_before"] >= 1 and s["collisions_after"] == 0
    assert s["moved_items"] == s["collisions_before"]
    assert s["moved_share"] == pytest.approx(s["moved_items"] / 60)
    assert s["before"]["collisions"] == s["collisions_before"] and s["after"]["collisions"] == 0
    assert s["before"]["items_per_prefix"][-1]["max"] >= 2
    assert set(s["reconstruction_error"]) == {"greedy", "unique"}
    back = SemanticIDs.load(sids.save(tmp_path / "sids.json"))
    assert back.config == json.loads(json.dumps(c)) and back.stats == json.loads(json.dumps(s))
    assert np.array_equal(back.codes, sids.codes)
    again = build_semantic_ids(items, method, levels=3, codebook_size=4, seed=7, embeddings=X,
                               **params)
    assert np.array_equal(again.codes, sids.codes)


def test_build_rejects_bad_input():
    items = toy_items(10)
    with pytest.raises(ValueError, match="cannot get unique SIDs"):  # before any encoding
        build_semantic_ids(items, levels=1, codebook_size=8, encoder="no/such-model")
    with pytest.raises(ValueError, match="levels"):
        build_semantic_ids(items, levels=0, embeddings=np.zeros((10, 3)))
    bad = np.random.default_rng(0).normal(size=(10, 3))
    bad[2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        build_semantic_ids(items, "rqkmeans", levels=2, codebook_size=4, embeddings=bad)
    with pytest.raises(ValueError, match="9 embeddings for 10 items"):
        build_semantic_ids(items, "rqkmeans", levels=2, codebook_size=4,
                           embeddings=np.zeros((9, 3)))
    with pytest.raises(ValueError, match="unknown method"):
        build_semantic_ids(items, "vq", levels=2, codebook_size=4, embeddings=np.zeros((10, 3)))


# ------------------------------------------------------------------ embedding cache
def test_encode_cache_reuses_and_extends(tmp_path, monkeypatch):
    monkeypatch.setenv("CRSLIB_CACHE", str(tmp_path))
    texts = [it.text() for it in toy_items(5)]
    first = encode.encode_texts(texts, progress=False)
    assert first.shape == (5, 384) and first.dtype == np.float32
    path = encode.cache_path(encode.DEFAULT_ENCODER)
    assert path.is_file() and path.parent.parent == tmp_path
    assert not list(path.parent.glob("*.tmp"))  # written atomically, nothing left over

    import sentence_transformers
    calls = []

    class Spy(sentence_transformers.SentenceTransformer):
        def encode(self, sentences, **kw):
            calls.append(list(sentences))
            return super().encode(sentences, **kw)

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", Spy)
    again = encode.encode_texts(list(reversed(texts)), progress=False)
    assert calls == [] and np.array_equal(again, first[::-1])  # no model run at all
    more = encode.encode_texts(texts + ["title: New | year: 2020", texts[0]], progress=False)
    assert calls == [["title: New | year: 2020"]]  # only the new text, once
    assert np.array_equal(more[:5], first) and np.array_equal(more[6], first[0])
    assert encode.cache_path("BAAI/bge-large-en-v1.5") != path  # keyed by encoder


# ------------------------------------------------------------------ CLI
def write_redial_catalog(root: Path, n: int) -> None:
    (root / "redial").mkdir(parents=True)
    rows = ["movieId,movieName,nbMentions"] + [f"{1000 + k},Film {k} ({1990 + k % 20}),1"
                                               for k in range(n)]
    (root / "redial" / "movies_with_mentions.csv").write_text("\n".join(rows) + "\n")


def test_cli_ids_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CRSLIB_CACHE", str(tmp_path / "cache"))
    write_redial_catalog(tmp_path / "data", 40)
    out = tmp_path / "out"
    rc = main(["ids", "--dataset", "redial", "--method", "rqkmeans", "--levels", "2",
               "--codebook-size", "8", "--data-root", str(tmp_path / "data"), "--out", str(out),
               "--quiet"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    for key in ("items", "levels", "codebook_size", "collisions_before", "collisions_after",
                "moved_items", "unique", "utilization", "seconds"):
        assert key in summary
    assert summary["items"] == 40 and summary["unique"] is True
    assert summary["collisions_after"] == 0 and len(summary["utilization"]) == 2
    sids = SemanticIDs.load(out / "sids.json")
    assert len(sids) == 40 and sids.config["dataset"] == "redial"
    assert sids.config["encoder"] == encode.DEFAULT_ENCODER
    assert sids.tokens("1000").startswith("<a_")

    rc = main(["ids", "--dataset", "redial", "--levels", "1", "--codebook-size", "8",
               "--data-root", str(tmp_path / "data"), "--out", str(out), "--quiet"])
    assert rc == 2 and "cannot get unique SIDs" in capsys.readouterr().err


def test_inspired_catalog_gets_unique_sids(shared_data):
    from crslib import data
    catalog = data.load_inspired_catalog(shared_data / "inspired")
    sids = build_semantic_ids(catalog, "rqkmeans")  # embeddings cached after the first run
    assert len(sids) == len(catalog) >= 1400
    assert sids.stats["collisions_after"] == 0 and sids.stats["after"]["utilization"][0] == 1.0


# ------------------------------------------------------------------ inspection (notebook 01)
TOY_CODES = {"a": (1, 0, 0), "b": (0, 2, 1), "c": (1, 3, 0), "d": (0, 1, 0), "e": (1, 0, 2),
             "f": (2, 0, 0)}


def toy_sids(stats: dict | None = None) -> SemanticIDs:
    return SemanticIDs(list(TOY_CODES), list(TOY_CODES.values()), codebook_size=4,
                       config={"method": "rqkmeans", "encoder": "toy"}, stats=stats or {})


def test_describe_by_hand():
    stats = {"collisions_before": 2, "collisions_after": 0, "moved_items": 2,
             "backtracked_items": 0}
    assert describe(toy_sids(stats)) == {
        "method": "rqkmeans", "encoder": "toy", "items": 6, "levels": 3, "codebook_size": 4,
        "utilization a": 0.75, "utilization b": 1.0, "utilization c": 0.75,
        "collisions_before": 2, "collisions_after": 0, "moved_items": 2,
        "backtracked_items": 0, "unique": 6}
    assert describe(toy_sids())["collisions_before"] is None  # SIDs saved without stats


def test_items_by_prefix_by_hand():
    catalog = {i: Item(i, f"T{i}", "2000" if i == "a" else "") for i in TOY_CODES}
    rows = items_by_prefix(toy_sids(), catalog, prefix_len=1, top=2, per_prefix=2)
    # <a_1> holds a, c, e (listed by full code: a, e); <a_0> holds b, d (d first)
    assert [(r["prefix"], r["prefix_items"], r["item"]) for r in rows] == [
        ("<a_1>", 3, "a"), ("<a_1>", 3, "e"), ("<a_0>", 2, "d"), ("<a_0>", 2, "b")]
    assert rows[0]["sid"] == "<a_1><b_0><c_0>" and rows[0]["title"] == "Ta (2000)"
    assert rows[1]["title"] == "Te"
    # prefix_len 2: (1,0) holds two items; the rest hold one each, ties by codes
    two = items_by_prefix(toy_sids(), catalog, prefix_len=2, top=3, per_prefix=5)
    assert [(r["prefix"], r["item"]) for r in two] == [
        ("<a_1><b_0>", "a"), ("<a_1><b_0>", "e"), ("<a_0><b_1>", "d"), ("<a_0><b_2>", "b")]
    with pytest.raises(ValueError, match="prefix_len"):
        items_by_prefix(toy_sids(), catalog, prefix_len=4)


def test_prefix_groups_and_labels_by_hand():
    sids = toy_sids()  # rows: a=0, b=1, c=2, d=3, e=4, f=5
    assert prefix_groups(sids) == {(1,): [0, 4, 2], (0,): [3, 1], (2,): [5]}
    assert list(prefix_groups(sids, 3)) == sorted(TOY_CODES.values())  # all size 1: by codes
    assert prefix_labels(sids, top=2) == ["<a_1>", "<a_0>", "<a_1>", "<a_0>", "<a_1>", "other"]
    assert prefix_labels(sids, prefix_len=2, top=1, other="-") == [
        "<a_1><b_0>", "-", "-", "-", "<a_1><b_0>", "-"]
    with pytest.raises(ValueError, match="prefix_len"):
        prefix_groups(sids, 0)


def test_embedding_map_equals_the_svd_of_the_centred_matrix():
    # scikit-learn's PCA replaced a hand-written SVD (issue 23): the same map, up to rounding
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 16))
    Xc = X - X.mean(axis=0)
    axes = np.linalg.svd(Xc, full_matrices=False)[2][:2]
    axes *= np.sign(axes[np.arange(2), np.abs(axes).argmax(axis=1)])[:, None]
    np.testing.assert_allclose(embedding_map(X), Xc @ axes.T, atol=1e-10)


def test_embedding_map_by_hand():
    X = np.array([[-2, 0, 0], [2, 0, 0], [0, 1, 0], [0, -1, 0]], dtype=float) + [5, -3, 7]
    want = [[-2, 0], [2, 0], [0, 1], [0, -1]]  # variance 2 along x, 0.5 along y
    np.testing.assert_allclose(embedding_map(X), want, atol=1e-12)
    np.testing.assert_allclose(embedding_map(X[:, [2, 0, 1]]), want, atol=1e-12)
    np.testing.assert_allclose(embedding_map(-X), np.negative(want), atol=1e-12)
    with pytest.raises(ValueError, match="2-D map"):
        embedding_map(X[:1])
    with pytest.raises(ValueError, match="2-D map"):
        embedding_map(X[:, :1])


def test_bag_encoder_is_the_mean_token_embedding(tmp_path, monkeypatch):
    import numpy as np
    import torch

    from crslib import pretrained
    from crslib.ids import encode
    monkeypatch.setattr(pretrained, "load_backbone", lambda name, seed=0: _tiny())
    texts = ["a quiet night", "space cats"]
    got = encode.encode_texts(texts, "smollm2-135m-bag", cache_file=tmp_path / "c.npz",
                              progress=False)
    model, tok = _tiny()
    emb = model.get_input_embeddings().weight.detach()
    want = np.stack([emb[tok(t, add_special_tokens=False)["input_ids"]].mean(0).numpy()
                     for t in texts])
    assert np.allclose(got, want, atol=1e-6)
    # cached: a second call loads nothing
    monkeypatch.setattr(pretrained, "load_backbone",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    assert np.array_equal(encode.encode_texts(texts, "smollm2-135m-bag",
                                              cache_file=tmp_path / "c.npz"), got)


def _tiny():
    from crslib.training.model import load_tokenizer, tiny_model
    tok = load_tokenizer("tiny")
    return tiny_model(len(tok), 0), tok


def test_encoding_is_canonical_whatever_the_batch_cache_or_threads(tmp_path, monkeypatch):
    """A text's embedding depends on the text only: not on the other texts encoded with it,
    not on what the cache held, not on torch's thread count (issue 21: ~1e-7 moves of batched
    embeddings changed every RQ-VAE code)."""
    import torch
    monkeypatch.setenv("CRSLIB_CACHE", str(tmp_path))
    texts = [it.text() for it in toy_items(4)] + ["title: A much longer title | plot: " + "x " * 40]
    together = encode.encode_texts(texts, progress=False, use_cache=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        alone = np.stack([encode.encode_texts([t], progress=False, use_cache=False)[0]
                          for t in reversed(texts)])[::-1]
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(together, alone)
    encode.encode_texts(texts[:2], progress=False)  # a cache that holds only some texts
    assert np.array_equal(encode.encode_texts(texts, progress=False), together)


def test_committed_map_is_used_as_is_and_checked_against_the_catalog(tmp_path):
    import warnings

    from crslib.ids import semantic_ids

    items = toy_items(10)
    spec = {"method": "rqkmeans", "levels": 2, "codebook_size": 4, "encoder": None, "seed": 0}
    sids = build_semantic_ids(items, "rqkmeans", levels=2, codebook_size=4,
                              embeddings=np.random.default_rng(0).normal(size=(10, 6)))
    assert semantic_ids.committed_map("toy", spec, items, root=tmp_path) is None
    path = semantic_ids.freeze_map(sids, "toy", spec, items, root=tmp_path)
    assert path == semantic_ids.map_path("toy", spec, tmp_path)
    got = semantic_ids.committed_map("toy", spec, items, root=tmp_path)
    assert np.array_equal(got.codes, sids.codes) and got.item_ids == sids.item_ids
    assert got.config["catalog_fingerprint"] == semantic_ids.catalog_fingerprint(items)
    assert semantic_ids.committed_map("toy", {**spec, "seed": 1}, items, root=tmp_path) is None
    with pytest.warns(UserWarning, match="another catalog"):
        assert semantic_ids.committed_map("toy", spec, items[:9], root=tmp_path) is None
    changed = [Item(it.id, it.title + "!") for it in items]
    with pytest.warns(UserWarning, match="texts changed"):
        assert semantic_ids.committed_map("toy", spec, changed, root=tmp_path) is not None
    other = SemanticIDs(sids.item_ids, sids.codes[::-1], 4)
    with pytest.raises(ValueError, match="different SID map"):
        semantic_ids.freeze_map(other, "toy", spec, items, root=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        semantic_ids.freeze_map(sids, "toy", spec, items, root=tmp_path)  # same map: no-op


def test_shipped_runs_sids_are_the_committed_maps():
    """The committed maps are the SIDs the shipped runs were trained on."""
    from dataclasses import asdict

    from crslib import config
    from crslib.ids import semantic_ids
    root = Path(__file__).resolve().parent.parent
    for ds in ("inspired", "redial"):
        spec = asdict(config.load(root / f"crslib/configs/cpu-{ds}-gcrs.json").sids)
        shipped = SemanticIDs.load(root / f"runs/cpu/{ds}/gcrs/sids.json")
        frozen = SemanticIDs.load(semantic_ids.map_path(ds, spec))
        assert frozen.item_ids == shipped.item_ids and np.array_equal(frozen.codes, shipped.codes)


def test_prepare_sids_reads_the_committed_map_first(shared_data, monkeypatch, tmp_path):
    from crslib import config, data
    from crslib.ids import semantic_ids
    from crslib.training import runbase
    monkeypatch.setenv("CRSLIB_CACHE", str(tmp_path))  # an empty cache: nothing to reuse there

    def no_build(*a, **k):
        raise AssertionError("built SIDs although a map is committed")
    monkeypatch.setattr(semantic_ids, "build_semantic_ids", no_build)
    root = Path(__file__).resolve().parent.parent
    cfg = config.load(root / "crslib/configs/smollm2-inspired-tiger.json")
    catalog = data.load("inspired", shared_data).catalog
    sids = runbase.prepare_sids(cfg, catalog)
    shipped = SemanticIDs.load(root / "runs/cpu/inspired/gcrs/sids.json")
    assert np.array_equal(sids.codes, shipped.codes)
