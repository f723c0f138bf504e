"""Paired claims (issue 21): the paired bootstrap against a slow reference, pairing by case ids
and seeds, the verdict rules; the new-item ranks of the paper protocol; the budget rule."""
import json

import numpy as np
import pytest

from crslib import metrics, report
from crslib.evaluation import evaluate
from crslib.studies import claims, curve
from crslib.format.serialize import Example


def slow_paired_bootstrap(a, b, clusters, n_boot, seed):
    """The definition, one replicate at a time (same random draws)."""
    labels = sorted(set(map(str, clusters)))
    index = {c: k for k, c in enumerate(labels)}
    groups = [[] for _ in labels]
    for x, y, c in zip(a, b, clusters):
        groups[index[str(c)]].append(x - y)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(groups), size=(n_boot, len(groups)))
    reps = []
    for row in draws:
        diffs = [d for g in row for d in groups[g]]
        reps.append(sum(diffs) / len(diffs))
    return np.array(reps)


def test_paired_bootstrap_equals_the_slow_definition():
    rng = np.random.default_rng(3)
    a = (rng.random(60) < 0.4).astype(float)
    b = (rng.random(60) < 0.25).astype(float)
    clusters = [f"d{k // 4}" for k in range(60)]
    got = metrics.paired_bootstrap(a, b, clusters, n_boot=500, seed=7)
    reps = slow_paired_bootstrap(a, b, clusters, 500, 7)
    assert got["delta"] == pytest.approx((a - b).mean())
    assert got["ci95"] == pytest.approx(list(np.percentile(reps, [2.5, 97.5])))
    p = min(1.0, 2 * (min((reps <= 0).sum(), (reps >= 0).sum()) + 1) / 501)
    assert got["p_value"] == pytest.approx(p)
    assert (got["cases"], got["clusters"]) == (60, 15)


def test_paired_bootstrap_golden_cases():
    same = metrics.paired_bootstrap([1, 0, 1], [1, 0, 1])
    assert same["delta"] == 0 and same["ci95"] == [0, 0] and same["p_value"] == 1.0
    up = metrics.paired_bootstrap([1.0] * 20, [0.0] * 20, n_boot=999)
    assert up["ci95"] == [1.0, 1.0] and up["p_value"] == pytest.approx(2 / 1000)
    with pytest.raises(ValueError, match="equal-length"):
        metrics.paired_bootstrap([1, 0], [1])
    with pytest.raises(ValueError, match="cluster labels"):
        metrics.paired_bootstrap([1, 0], [1, 1], ["a"])


def write(tmp_path, variant, ranks, ids, protocol="paper"):
    report.write_json({"protocol": protocol, "split": "test", "n_cases": len(ranks),
                       "case_ranks": ranks, "case_ids": ids, "metrics": {}, "ci95": {}},
                      tmp_path / "p" / "toy" / f"{variant}.{protocol}.json")


def test_judge_pairs_cases_by_id_and_seeds(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    reps = {"gcrs": [(0, "gcrs"), (1, "gcrs_seed1")], "tiger": [(0, "tiger"), (1, "tiger_seed1")],
            "popularity": [(None, "popularity")]}
    monkeypatch.setattr(claims, "replicates", lambda p, d, v: reps.get(v, [(None, v)]))
    ids = [f"d{k // 2}:{k}:i{k}" for k in range(40)]
    write(tmp_path, "gcrs", [1] * 30 + [None] * 10, ids)
    write(tmp_path, "gcrs_seed1", [1] * 28 + [None] * 12, ids)
    write(tmp_path, "tiger", [None] * 5 + [1] * 5 + [None] * 30, ids)
    write(tmp_path, "tiger_seed1", [None] * 40, ids)
    # popularity scored a sample, in another order: the claim uses the 20 common cases
    write(tmp_path, "popularity", [None] * 20, ids[::2][::-1])
    c = claims.judge("p", claims.Claim("x", "toy", "gcrs", "tiger", "recall@1"), n_boot=400)
    assert c["cases"] == 40 and c["dialogs"] == 20 and c["seeds"] == {"a": [0, 1], "b": [0, 1]}
    assert [(r["a"], r["b"]) for r in c["pairs"]] == [("gcrs", "tiger"),
                                                        ("gcrs_seed1", "tiger_seed1")]
    assert c["delta"] == pytest.approx((30 + 28) / 80 - 5 / 80)
    assert c["verdict"] == "holds" and c["p_value"] < 0.01
    assert c["value_a"]["mean"] == pytest.approx(29 / 40)
    v = claims.judge("p", claims.Claim("y", "toy", "gcrs", "popularity", "recall@1"), n_boot=400)
    assert v["cases"] == 20 and v["seeds"] == {"a": [0, 1], "b": [None]}
    assert [(r["a"], r["b"]) for r in v["pairs"]] == [("gcrs", "popularity"),
                                                        ("gcrs_seed1", "popularity")]
    back = claims.judge("p", claims.Claim("z", "toy", "tiger", "gcrs", "recall@1"), n_boot=400)
    assert back["verdict"] == "reversed" and back["delta"] == pytest.approx(-c["delta"])
    missing = claims.judge("p", claims.Claim("w", "toy", "gcrs", "resp", "recall@1"))
    assert missing["verdict"] == "not run" and missing["delta"] is None


def test_a_request_claim_pairs_the_per_case_genre_shares(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    monkeypatch.setattr(claims, "replicates", lambda p, d, v: [(0, v)])
    ids = [f"d{k}:1:i{k}" for k in range(30)]
    shares = {"a": [1.0] * 20 + [0.5] * 10, "b": [0.5] * 20 + [0.5] * 10}
    for name, xs in shares.items():
        report.write_json({"k": 10, "case_ids": ids, "case_shares": {"run": xs, "popularity": xs}},
                          tmp_path / "p" / "toy" / f"{name}.request.json")
    c = claims.judge("p", claims.Claim("x", "toy", "a", "b", "share@10", "request"), n_boot=300)
    assert c["cases"] == 30 and c["delta"] == pytest.approx(20 * 0.5 / 30)
    assert c["verdict"] == "holds"
    with pytest.raises(ValueError, match="share@10, not share@5"):
        claims.per_case("p", "toy", "a", "share@5", "request")
    report.write_json({"k": 10, "share": {"run": 0.5}}, tmp_path / "p" / "toy" / "old.request.json")
    assert claims.per_case("p", "toy", "old", "share@10", "request") is None  # no per-case shares


def test_a_baseline_request_claim_reads_the_shares_the_run_scored_beside_it(tmp_path, monkeypatch):
    # popularity has no request check of its own: the run's check scores it on the same cases
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    monkeypatch.setattr(claims, "replicates",
                        lambda p, d, v: [(None, v)] if v == "popularity" else [(0, v)])
    ids = [f"d{k}:1:i{k}" for k in range(30)]
    report.write_json({"k": 10, "case_ids": ids,
                       "case_shares": {"run": [0.2] * 30, "popularity": [0.2] * 20 + [0.8] * 10}},
                      tmp_path / "p" / "toy" / "a.request.json")
    c = claims.judge("p", claims.Claim("x", "toy", "a", "popularity", "share@10", "request"),
                     n_boot=300)
    assert c["cases"] == 30 and c["delta"] == pytest.approx(-10 * 0.6 / 30)
    assert c["verdict"] == "reversed" and c["value_b"]["mean"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="no shares of 'repeat'"):
        claims.per_case("p", "toy", "repeat", "share@10", "request", host="a")


def test_one_seed_pair_that_does_not_hold_makes_it_not_shown(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    reps = {"a": [(0, "a"), (1, "a1")], "b": [(0, "b"), (1, "b1")]}
    monkeypatch.setattr(claims, "replicates", lambda p, d, v: reps[v])
    ids = [f"d{k}:0:i" for k in range(30)]
    write(tmp_path, "a", [1] * 30, ids)
    write(tmp_path, "b", [None] * 30, ids)
    write(tmp_path, "a1", [1] * 15 + [None] * 15, ids)
    write(tmp_path, "b1", [None] * 15 + [1] * 15, ids)
    c = claims.judge("p", claims.Claim("x", "toy", "a", "b", "recall@1"), n_boot=300)
    assert c["delta"] > 0 and c["verdict"] == "not shown"
    assert c["pairs"][0]["delta_ci95"][0] > 0 and c["pairs"][1]["delta_ci95"][0] <= 0


def test_new_items_come_from_the_paper_lists_and_markdown_renders(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    cases = [Example("d1", 1, "gcrs", "", "", "rec", "x", ("y",), ""),
             Example("d1", 3, "gcrs", "", "", "rec", "y", ("y", "x"), ""),
             Example("d2", 1, "gcrs", "", "", "rec", "z", (), "")]

    class Fixed:
        num_beams = 3

        def top(self, cases, k):
            return [["y", "x", "z"][:k]] * len(cases)
    r = evaluate.evaluate(Fixed(), cases, "paper")
    assert r["case_ranks"] == [2, 1, 3]
    assert r["new_item_cases"] == [0, 2] and r["case_new_ranks"] == [1, 3]  # y removed in d1
    assert r["case_ids"] == ["d1:1:x", "d1:3:y", "d2:1:z"]
    n = evaluate.new_items_result(r)
    assert n["case_ids"] == ["d1:1:x", "d2:1:z"] and n["metrics"]["recall@1"] == 0.5
    with pytest.raises(ValueError, match="no new-item ranks"):
        evaluate.new_items_result({"case_ranks": [1]})
    monkeypatch.setattr(claims, "replicates", lambda p, d, v: [(None, v)])
    report.write_json({**r, "split": "test"}, tmp_path / "p" / "toy" / "a.paper.json")
    report.write_json({**r, "split": "test", "case_new_ranks": [None, None]},
                      tmp_path / "p" / "toy" / "b.paper.json")
    c = claims.judge("p", claims.Claim("new", "toy", "a", "b", "recall@10", "new_items"),
                     n_boot=100)
    assert c["cases"] == 2 and c["delta"] == pytest.approx(1.0)
    monkeypatch.setitem(claims.CLAIMS, "p", (claims.Claim("new", "toy", "a", "b", "recall@10",
                                                          "new_items"),))
    claims.write("p", n_boot=100)
    saved = json.loads((tmp_path / "p" / "claims.json").read_text())["claims"][0]
    assert set(saved) >= {"claim", "dataset", "metric", "a", "b", "cases", "delta",
                          "delta_ci95", "p_value", "seeds", "verdict"}
    table = claims.markdown("p").splitlines()
    assert table[2].startswith("| new | a 100.00 vs b 0.00 | +100.00")


def test_budget_is_the_best_validation_point_ties_to_fewer_steps():
    rows = [{"step": 25, "ndcg@10": 0.10}, {"step": 50, "ndcg@10": 0.14},
            {"step": 75, "ndcg@10": 0.14}, {"step": 100, "ndcg@10": 0.12}]
    assert curve.choose_budget(rows)["step"] == 50
    with pytest.raises(ValueError):
        curve.choose_budget([])
    with pytest.raises(ValueError, match="never on the test split"):
        curve.learning_curve("p", "toy", "gcrs", split="test")


def test_curve_plot_marks_the_chosen_budget(tmp_path):
    rows = [{"step": s, "cases": 10, "recall@1": a, "recall@10": b, "ndcg@10": n,
             "ndcg@10 95% CI": [n - 0.05, n + 0.05]}
            for s, a, b, n in ((25, 0.1, 0.2, 0.15), (50, 0.2, 0.3, 0.25))]
    c = {"rows": rows, "metric": "ndcg@10", "chosen_steps": 50, "split": "dev",
         "dataset": "toy", "variant": "gcrs", "profile": "p", "finished": True}
    fig = curve.plot(c, tmp_path / "sub" / "curve.png")
    assert (tmp_path / "sub" / "curve.png").stat().st_size > 1000
    assert "chosen: 50 steps" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
