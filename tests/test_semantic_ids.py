"""SID statistics, the catalog -> SemanticIDs pipeline, the embedding cache and `crslib ids`."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from crslib import encode
from crslib.cli import main
from crslib.data import Item
from crslib.semantic_ids import SemanticIDs, build_semantic_ids, code_stats





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
