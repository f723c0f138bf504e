"""Experiment steps: results are saved with their config hash and reused; tables read them."""
import json

import pytest

from crslib import report
from crslib.evaluation import baselines, dialog_eval, recommenders
from crslib.studies import chat_choice, experiments, result_tables, run_inventory


def test_baseline_result_is_saved_and_reused(shared_data, tmp_path, monkeypatch):
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    r = experiments.evaluate("smoke", "inspired", "repeat", "paper", shared_data, limit=30)
    path = tmp_path / "smoke" / "inspired" / "repeat.paper.json"
    saved = json.loads(path.read_text())
    assert saved["n_cases"] == 30 and saved["limit"] == 30 and saved["variant"] == "repeat"
    assert saved["metrics"] == r["metrics"] and set(saved["ci95"]) == set(saved["metrics"])
    monkeypatch.setattr(baselines.Repeat, "rank", lambda *a, **k: pytest.fail("recomputed"))
    assert experiments.evaluate("smoke", "inspired", "repeat", "paper", shared_data, limit=30) == saved
    with pytest.raises(ValueError, match="only ranks"):
        experiments.evaluate("smoke", "inspired", "repeat", "dialog", shared_data)


def test_a_validation_score_never_takes_the_place_of_the_test_one(shared_data, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    test = experiments.evaluate("smoke", "inspired", "repeat", "new_items", shared_data, limit=30)
    dev = experiments.evaluate("smoke", "inspired", "repeat", "new_items", shared_data, limit=30,
                               split="dev")
    folder = tmp_path / "smoke" / "inspired"
    for protocol in ("paper", "new_items"):  # new_items writes its paper lists first
        assert json.loads((folder / f"repeat.{protocol}.json").read_text())["split"] == "test"
        assert json.loads((folder / "dev" / f"repeat.{protocol}.json").read_text())[
            "split"] == "dev"
    assert test["case_ids"] != dev["case_ids"]


def test_a_full_result_cut_to_a_sample_equals_scoring_the_sample(shared_data, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    experiments.evaluate("smoke", "inspired", "repeat", "paper", shared_data, limit=40)
    experiments.evaluate("smoke", "inspired", "popularity", "paper", shared_data, limit=10**6)
    cut = result_tables.on_same_cases("smoke", "inspired", "popularity", "repeat", "paper",
                                      shared_data)
    direct = experiments.evaluate("smoke", "inspired", "popularity", "paper", shared_data,
                                  limit=40, save=False)
    assert cut["n_cases"] == 40 and cut["case_ranks"] == direct["case_ranks"]
    assert cut["metrics"] == direct["metrics"] and cut["ci95"] == direct["ci95"]
    # dedup: the community ranks cut to the reference's sample, then the repeats dropped; a
    # larger sample that holds the reference's cases can be cut too
    experiments.evaluate("smoke", "inspired", "repeat", "dedup", shared_data, limit=40)
    experiments.evaluate("smoke", "inspired", "popularity", "community", shared_data, limit=80)
    dd = result_tables.on_same_cases("smoke", "inspired", "popularity", "repeat", "dedup",
                                     shared_data)
    direct_dd = experiments.evaluate("smoke", "inspired", "popularity", "dedup", shared_data,
                                     limit=40, save=False)
    assert dd["case_ranks"] == direct_dd["case_ranks"] and dd["n_cases"] < 40
    assert dd["metrics"] == direct_dd["metrics"]
    rows = result_tables.backbone_table("smoke", ["inspired"], ["repeat"], ["popularity"],
                                        shared_data)
    assert [(r["model"], r["cases"]) for r in rows] == [("repeat", 40), ("popularity", 40)]
    assert rows[1]["recall@10"] == round(100 * direct["metrics"]["recall@10"], 2)
    assert rows[1]["dedup recall@10"] == round(100 * direct_dd["metrics"]["recall@10"], 2)
    # a claim pairs a sample with a ranker scored on more cases on the sample's cases
    from crslib.studies import claims
    c = claims.judge("smoke", claims.Claim("x", "inspired", "repeat", "popularity",
                                           "recall@10"), shared_data, n_boot=200)
    assert c["cases"] == 40 and c["value_b"]["mean"] == pytest.approx(
        direct["metrics"]["recall@10"])
    with pytest.raises(ValueError, match="missing"):  # a sample cannot be cut to more cases
        result_tables.on_same_cases("smoke", "inspired", "repeat", "popularity", "paper",
                                    shared_data)


def test_rows_and_relative_improvement(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    report.write_json({"n_cases": 10, "metrics": {"recall@1": 0.1234, "ppl": 12.5},
                       "ci95": {"recall@1": [0.05, 0.2]}}, tmp_path / "p" / "d" / "gcrs.paper.json")
    rows = result_tables.ours_rows("p", "d", ["gcrs", "missing"], "paper", ["recall@1", "ppl"])
    assert rows == [{"model": "gcrs", "source": "ours (p)", "cases": 10, "recall@1": 12.34,
                     "ppl": 12.5, "recall@1 95% CI": "[5.00, 20.00]"}]
    assert result_tables.relative_improvement(14.56, 11.28) == pytest.approx(0.2908, abs=1e-4)
    paper = result_tables.reported_rows("table2_inspired", ["recall@1"])
    assert {"model": "GCRS", "source": "reported in the paper", "recall@1": 14.56} in paper
    with pytest.raises(FileNotFoundError, match="not a finished run"):
        experiments.evaluate("p", "d", "gcrs", run_path=tmp_path / "nothing")


def test_dedup_is_community_without_repeats(shared_data, tmp_path, monkeypatch):
    from crslib import data
    from crslib.training import run
    from crslib.evaluation import evaluate
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    com = experiments.evaluate("smoke", "inspired", "repeat", "community", shared_data, limit=60)
    ded = experiments.evaluate("smoke", "inspired", "repeat", "dedup", shared_data, limit=60)
    ds = data.load("inspired", shared_data)
    sids = run.prepare_sids(experiments.config("smoke", "inspired"), ds.catalog)
    cases = evaluate.rec_cases(ds, sids, "test", limit=60)
    keep = [r for c, r in zip(cases, com["case_ranks"]) if c.item not in c.context_items]
    assert ded["case_ranks"] == keep and ded["n_cases"] == len(keep) < 60


def test_headline_table_is_generated_between_markers(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    report.write_json({"n_cases": 304, "metrics": {"recall@1": 0.05, "recall@10": 0.2, "ndcg@10": 0.1},
                       "ci95": {"recall@10": [0.15, 0.25]}, "model_hash": "0123456789abcdef"},
                      tmp_path / "cpu" / "inspired" / "gcrs.paper.json")
    report.write_json({"n_cases": 304, "metrics": {"recall@1": 0.03, "recall@10": 0.1, "ndcg@10": 0.05},
                       "ci95": {"recall@10": [0.05, 0.15]}, "model_hash": None},
                      tmp_path / "cpu" / "inspired" / "popularity.paper.json")
    md = result_tables.headline_markdown("cpu", ["inspired"])
    lines = md.splitlines()
    assert ("| inspired | popularity | ours (cpu) | - | 304 | 3.00 | 10.00 [5.00, 15.00] | 5.00 |"
            in lines)  # a baseline (no weights) has no backbone
    assert lines[2] == ("| inspired | gcrs | ours (cpu) | compact 2x256, from scratch | 304 | "
                        "5.00 | 20.00 [15.00, 25.00] | 10.00 |")
    assert lines[4] == ("| inspired | TIGER | reported in the paper | Qwen2.5-7B | - | 11.28 | "
                        "22.93 | 16.15 |")
    assert lines[5].startswith("| inspired | GCRS | reported in the paper | Qwen2.5-7B | - | 14.56 |")
    report.write_json({"n_cases": 304, "metrics": {"recall@1": 0.1, "recall@10": 0.3, "ndcg@10": 0.2},
                       "ci95": {"recall@10": [0.25, 0.35]}, "model_hash": "fedcba9876543210"},
                      tmp_path / "smollm2" / "inspired" / "gcrs.paper.json")
    both = result_tables.headline_markdown(["smollm2", "cpu"], ["inspired"]).splitlines()
    assert both[2].startswith("| inspired | gcrs | ours (smollm2) | SmolLM2-135M + LoRA | 304 | 10.00")
    assert both[3] == lines[2]
    text = "a\n<!-- headline:start -->\nold\n<!-- headline:end -->\nb"
    assert result_tables.replace_block(text, md, "headline") == (
        "a\n<!-- headline:start -->\n" + md + "<!-- headline:end -->\nb")
    with pytest.raises(ValueError, match="markers"):
        result_tables.replace_block("no markers", md, "headline")


def test_a_run_folder_is_trained_by_one_process_at_a_time(tmp_path):
    import subprocess
    import sys
    from crslib.training import run, runbase
    with run.run_lock(tmp_path):
        assert runbase.is_locked(tmp_path)
        with pytest.raises(run.RunLocked, match="being trained by another process"):
            with run.run_lock(tmp_path):
                pass
        # another process sees the lock too, and cannot take it
        code = ("import sys; from pathlib import Path; from crslib.training import runbase; "
                "sys.exit(0 if runbase.is_locked(Path(sys.argv[1])) else 1)")
        assert subprocess.run([sys.executable, "-c", code, str(tmp_path)]).returncode == 0
    assert not runbase.is_locked(tmp_path)
    # a lock left by a process that died (here: killed while holding it) is free again
    code = ("import os, sys; from pathlib import Path; from crslib.training import run; "
            "lock = run.run_lock(Path(sys.argv[1])); lock.__enter__(); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    assert (tmp_path / ".lock").exists() and not runbase.is_locked(tmp_path)
    with run.run_lock(tmp_path):
        assert runbase.is_locked(tmp_path)


def test_runs_inventory_lists_finished_runs_and_renders(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(experiments, "RUNS", tmp_path / "runs")
    folder = tmp_path / "runs" / "cpu" / "inspired" / "gcrs"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"dataset": "inspired", "variant": "gcrs"}))
    (folder / "train_summary.json").write_text(json.dumps({
        "steps": 250, "tokens": 960000, "seconds": 270.0, "model_hash": "ab" * 8,
        "copy_warmup": {"steps": 120}}))
    (tmp_path / "runs" / "cpu" / "inspired" / "unfinished").mkdir()  # no summary: not listed
    rows = run_inventory.runs_inventory("cpu")
    assert [(r["variant"], r["steps"], r["copy_warmup_steps"], r["shipped"]) for r in rows] == [
        ("gcrs", 250, 120, False)]  # outside the repository: not shipped
    assert "no run inventory yet" in run_inventory.runs_markdown("cpu")
    report.save_table(rows, "runs", "cpu")
    assert run_inventory.runs_markdown("cpu").splitlines()[2].endswith(
        "| 250 (+ 120) | 960,000 | 4.5 | `abababababababab` | trains |")
    assert report.REPO.joinpath("runs/cpu/redial/gcrs").resolve() in run_inventory.shipped_runs(
        report.REPO / "runs")


def test_best_chat_run_is_chosen_on_validation_unseen_runs_first(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(experiments, "RUNS", tmp_path / "runs")
    sweeps = {"gcrs": (3.0, True), "backbone_x": (2.0, False), "backbone_y": (1.0, False),
              "sid": (9.0, False), "resp": (8.0, False)}  # variant: validation BLEU, seen
    for variant in sweeps:
        folder = tmp_path / "runs" / "cpu" / "inspired" / variant
        (folder / "model").mkdir(parents=True)
        (folder / "model" / "w").write_text(variant)
        cfg = {**experiments.config("cpu", "inspired").to_dict(), "variant": variant,  # any name:
               "format": variant if variant in ("sid", "resp") else "gcrs"}  # the format decides
        (folder / "config.json").write_text(json.dumps(cfg))
        (folder / "train_summary.json").write_text("{}")
    asked = []

    def fake_decoding(profile, ds, variant, data_root=None):
        asked.append(variant)
        bleu, seen = sweeps[variant]
        return {"split": "dev", "chosen": "greedy", "validation_in_training": seen,
                "rows": [{"decoding": "greedy", "bleu": bleu, "distinct@2": 0.1}]}
    follows = {"gcrs": 0.5, "backbone_x": 0.5, "backbone_y": 0.5}  # share of the top 10
    monkeypatch.setattr(chat_choice, "chat_decoding", fake_decoding)
    monkeypatch.setattr(chat_choice, "request_following", lambda p, ds, v, root=None: {
        "share": {"run": follows[v], "popularity": 0.3, "gold": 0.7}})
    with pytest.raises(FileNotFoundError, match="no finished run"):  # none of these is shipped
        chat_choice.best_chat_run("cpu", ["inspired"])
    best = chat_choice.best_chat_run("cpu", ["inspired"], shipped_only=False)
    # unseen validation first, then BLEU; sid/resp write no gcrs response and are not asked
    assert (best["variant"], best["bleu"], best["split"]) == ("backbone_x", 2.0, "dev")
    assert (best["follows"], best["popularity_follows"]) == (0.5, 0.3)
    assert sorted(asked) == ["backbone_x", "backbone_y", "gcrs"]
    follows["backbone_x"] = 0.2  # talks better but follows requests less than popularity
    assert chat_choice.best_chat_run("cpu", ["inspired"], False)["variant"] == "backbone_y"
    sweeps["backbone_x"] = sweeps["backbone_y"] = (2.0, True)
    assert chat_choice.best_chat_run("cpu", ["inspired"], False)["variant"] == "gcrs"
    with pytest.raises(FileNotFoundError, match="no finished run"):
        chat_choice.best_chat_run("cpu", ["redial"], shipped_only=False)


def test_chat_decoding_is_chosen_on_dev_and_reused(shared_data, tmp_path, monkeypatch):
    import torch
    from crslib.evaluation import evaluate
    monkeypatch.setattr(report, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(experiments, "RUNS", tmp_path / "runs")
    torch.set_num_threads(1)
    fitted = recommenders.fit(experiments.config("smoke", "inspired"),
                          experiments.run_dir("smoke", "inspired", "gcrs"), shared_data)
    assert (isinstance(fitted, recommenders.GenerativeRecommender)
            and fitted.config.variant == "gcrs")
    out = chat_choice.chat_decoding("smoke", "inspired", "gcrs", shared_data, limit=4)
    assert out["split"] == "dev" and out["limit"] == 4 and len(out["rows"]) == len(
        dialog_eval.DECODING_CANDIDATES)
    assert out["chosen"] in [r["decoding"] for r in out["rows"]]
    # the smoke config keeps the first 40 dialogs of train + dev: all from train, none of dev
    assert out["validation_in_training"] is False
    assert (tmp_path / "results" / "smoke" / "inspired" / "gcrs.decoding.json").is_file()
    monkeypatch.setattr(dialog_eval, "decoding_sweep", lambda *a, **k: pytest.fail("recomputed"))
    assert chat_choice.chat_decoding("smoke", "inspired", "gcrs", shared_data, limit=4) == out
    # the genre-request check: the run's beam top 10 against popularity's, on dev cases that
    # ask for a genre; its top lists agree with the paper protocol's ranks of the same cases
    req = chat_choice.request_following("smoke", "inspired", "gcrs", shared_data, limit=6)
    assert (req["split"], req["n_cases"], req["k"]) == ("dev", 6, 10)
    assert all(0 <= v <= 1 for v in req["share"].values()) and len(req["examples"]) == 5
    assert len(req["case_ids"]) == len(req["case_shares"]["run"]) == 6
    assert sum(req["case_shares"]["run"]) / 6 == pytest.approx(req["share"]["run"])
    assert (tmp_path / "results" / "smoke" / "inspired" / "gcrs.request.json").is_file()
    rec, sids = fitted, fitted.sids  # what fit returned is the saved run's recommender
    ds = experiments.data.load("inspired", shared_data)
    cases = evaluate.rec_cases(ds, sids, "dev", limit=6)
    tops, ranks = rec.top(cases, 10), rec.ranks(cases, "paper")
    assert all(len(t) == 10 for t in tops)
    assert [t.index(ex.item) + 1 if ex.item in t else None for t, ex in zip(tops, cases)] == [
        r if r is not None and r <= 10 else None for r in ranks]
    monkeypatch.setattr(recommenders.GenerativeRecommender, "top",
                        lambda *a: pytest.fail("recomputed"))
    assert chat_choice.request_following("smoke", "inspired", "gcrs", shared_data, limit=6) == req
    # the chat's intent cut, chosen on 20 dev turns, and reused
    from crslib.studies import freemode
    cut = freemode.intent_cut("smoke", "inspired", "gcrs", shared_data, limit=20)
    assert (cut["split"], cut["n_turns"], cut["protocol"]) == ("dev", 20, "intent")
    assert cut["f1"] >= cut["f1_at_zero"] and 0 <= cut["rec_share"] <= 1
    monkeypatch.setattr(freemode, "rec_margin", lambda *a, **k: pytest.fail("recomputed"))
    assert freemode.intent_cut("smoke", "inspired", "gcrs", shared_data, limit=20) == cut


def test_the_cli_scores_a_baseline_by_name_and_a_run_by_its_folder(shared_data, tmp_path,
                                                                   monkeypatch, capsys):
    from crslib.cli import main
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    out = tmp_path / "pop.json"
    assert main(["evaluate", "--run", "popularity", "--protocol", "paper", "--profile", "smoke",
                 "--dataset", "inspired", "--limit", "12", "--data-root", str(shared_data),
                 "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert (saved["variant"], saved["n_cases"], saved["model_hash"]) == ("popularity", 12, None)
    capsys.readouterr()
    assert main(["evaluate", "--run", str(tmp_path / "no-run"), "--protocol", "paper",
                 "--profile", "smoke", "--dataset", "inspired"]) == 2
    assert "no-run" in capsys.readouterr().err


def test_every_pretrained_result_comes_from_committed_weights():
    """Issue 21: each result of the ``smollm2`` profile names (``model_hash``) the weights of a
    run folder or snapshot this repository commits, hashed from the files themselves."""
    import subprocess
    from pathlib import Path
    from crslib.training import run
    tracked = subprocess.run(["git", "ls-files", "runs/smollm2", "results/smollm2"],
                             cwd=report.REPO, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    weights = {run.model_hash(report.REPO / Path(f).parent) for f in tracked
               if Path(f).name in ("train_summary.json", "snapshot.json")}
    named = {}
    for f in tracked:
        if f.startswith("results/") and f.endswith(".json"):
            r = json.loads((report.REPO / f).read_text())
            if isinstance(r, dict) and r.get("model_hash"):
                named[f] = r["model_hash"]
    assert len(named) > 30 and len(weights) > 10
    assert {f: h for f, h in named.items() if h not in weights} == {}
