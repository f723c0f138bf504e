import math

import numpy as np
import pytest
from sklearn.metrics import label_ranking_average_precision_score, ndcg_score, top_k_accuracy_score

from crslib import metrics


def test_ranking_golden_values():
    m = metrics.ranking_metrics([1, 3, None, 12])
    assert m["recall@1"] == 0.25 and m["recall@5"] == 0.5 and m["recall@20"] == 0.75
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(4)) / 4)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3) / 4)
    assert m["mrr@20"] == pytest.approx((1 + 1 / 3 + 1 / 12) / 4)
    with pytest.raises(ValueError, match="1-based"):
        metrics.ranking_metrics([0])


def test_ranking_matches_scikit_learn_on_random_scores():
    rng = np.random.default_rng(0)
    n, items = 200, 30
    scores = rng.normal(size=(n, items))
    gold = rng.integers(0, items, size=n)
    ranks = [1 + int((s > s[g]).sum()) for s, g in zip(scores, gold)]
    onehot = np.eye(items)[gold]
    m = metrics.ranking_metrics(ranks, recall_ks=(1, 5, 10), cut_ks=(5, 10, 30))
    for k in (1, 5, 10):
        assert m[f"recall@{k}"] == pytest.approx(
            top_k_accuracy_score(gold, scores, k=k, labels=range(items)))
    for k in (5, 10):
        assert m[f"ndcg@{k}"] == pytest.approx(ndcg_score(onehot, scores, k=k))
    assert m["mrr@30"] == pytest.approx(label_ranking_average_precision_score(onehot, scores))


def test_bootstrap_interval_contains_mean_and_is_seeded():
    x = np.array([1.0] * 30 + [0.0] * 70)
    lo, hi = metrics.bootstrap_ci(x, seed=1)
    assert lo < 0.3 < hi and hi - lo < 0.25
    assert metrics.bootstrap_ci(x, seed=1) == (lo, hi)
    assert metrics.bootstrap_ci(np.ones(10)) == (1.0, 1.0)


def test_distinct_definitions_on_a_tiny_corpus():
    corpus = ["a b a", "a b c"]  # unigrams: a b a a b c (3 unique of 6); bigrams ab ba ab bc
    assert metrics.distinct(corpus, 1) == 3 / 6
    assert metrics.distinct(corpus, 2) == 3 / 4
    assert metrics.distinct_per_response(corpus, 2) == 3 / 2
    assert metrics.distinct(["<movie> is great", "<MOVIE> is great"], 3) == 1 / 2


def test_bleu_and_dialog_metrics():
    assert metrics.bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100)
    assert metrics.bleu(["dog"], ["the cat sat on the mat"]) == 0.0
    with pytest.raises(ValueError):
        metrics.bleu(["a"], [])
    d = metrics.dialog_metrics(["try <movie> now", "hello there"], ["try <movie>", "hi"])
    assert d["item_mention_share"] == 0.5 and "distinct_per_response@4" in d


def test_perplexity_and_intent():
    assert metrics.perplexity(2 * math.log(4), 2) == pytest.approx(4)
    m = metrics.intent_metrics(["rec", "rec", "chat", "chat"], ["rec", "chat", "rec", "chat"])
    assert m["intent_accuracy"] == 0.5 and m["intent_f1"] == 0.5
    assert metrics.mean_sd([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))


def test_repeats_ngram_finds_loops():
    from crslib.metrics import dialog_metrics, repeats_ngram
    assert repeats_ngram("but I would help, but I would help, but")
    assert not repeats_ngram("I am glad you enjoyed the movie. I have a few more.")
    assert not repeats_ngram("a b")
    assert dialog_metrics(["a b c a b c", "x y z"], ["r", "s"])["looping_share"] == 0.5


def _old_intent(gold, pred):
    """The hand-written intent metrics the scikit-learn ones replaced (issue 23), kept as the
    parity reference."""
    import numpy as np
    g, p = np.array([x == "rec" for x in gold]), np.array([x == "rec" for x in pred])
    tp, fp, fn = int((g & p).sum()), int((~g & p).sum()), int((g & ~p).sum())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    return {"intent_accuracy": float((g == p).mean()), "intent_precision": prec,
            "intent_recall": rec, "intent_f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
            "f1_counts": 2 * tp / (2 * tp + fp + fn) if tp else 0.0}


def test_one_f1_from_scikit_learn_matches_both_hand_written_ones():
    """Parity of the swap: ``metrics.f1`` equals the free-mode cut's ``2tp / (2tp + fp + fn)``
    exactly (so every chosen cut is unchanged), and ``intent_metrics`` gives the old accuracy,
    precision and recall exactly and F1 within 4 ulp of the old ``2pr / (p + r)``."""
    import numpy as np
    rng = np.random.default_rng(0)
    cases = [(["chat"] * 3, ["chat"] * 3), (["rec"] * 3, ["rec"] * 3), (["rec"], ["chat"]),
             (["chat"], ["rec"])]
    for _ in range(500):
        n = int(rng.integers(1, 200))
        gold = np.where(rng.random(n) < rng.random(), "rec", "chat").tolist()
        pred = np.where(rng.random(n) < rng.random(), "rec", "chat").tolist()
        cases.append((gold, pred))
    for gold, pred in cases:
        old, new = _old_intent(gold, pred), metrics.intent_metrics(gold, pred)
        assert metrics.f1([g == "rec" for g in gold], [p == "rec" for p in pred]) == \
            old["f1_counts"] == new["intent_f1"]
        for k in ("intent_accuracy", "intent_precision", "intent_recall"):
            assert new[k] == old[k], k
        assert abs(new["intent_f1"] - old["intent_f1"]) <= 4 * math.ulp(max(old["intent_f1"], 1e-300))
    assert math.isnan(metrics.intent_metrics([], [])["intent_accuracy"])
