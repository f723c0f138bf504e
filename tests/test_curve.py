"""A learning curve on validation data, end to end on the smoke config: snapshots are scored on
the dataset's validation split with their new-item recall, and two curves (or a curve and a
baseline) are compared step by step on the same cases from the saved results alone."""
import dataclasses
import json

import pytest
import torch

from crslib import report
from crslib.studies import curve, experiments
from crslib.training import run


@pytest.fixture(scope="module")
def scored(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("curve")
    cfg = run.load_config(run.config_path("smoke", "inspired"))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=4,
                                                             snapshot_every=2))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run.train_run(cfg, root / "runs" / "c", shared_data, progress=False)
    finally:
        torch.set_num_threads(threads)
    results = root / "results"
    mp = pytest.MonkeyPatch()
    mp.setattr(report, "RESULTS", results)
    c = curve.learning_curve("smoke", "inspired", "c", limit=40, data_root=shared_data,
                             say=lambda *_: None, run_path=root / "runs" / "c")
    yield c, results, shared_data, root / "runs" / "c"
    mp.undo()


def test_each_point_is_scored_on_validation_with_its_new_item_recall(scored):
    c, results, *_ = scored
    assert c["split"] == "dev" and c["finished"]
    assert [r["step"] for r in c["rows"]] == [2, 4] and [r["final"] for r in c["rows"]] == [
        False, True]
    for r in c["rows"]:
        saved = json.loads((results / "smoke" / "inspired" / "c.curve" /
                            f"step-{r['step']:04d}.paper.json").read_text())
        assert saved["split"] == "dev" and saved["model_hash"] == r["model_hash"]
        hits = [k is not None and k <= 10 for k in saved["case_new_ranks"]]
        assert r["new_item_cases"] == len(hits) > 0
        assert r[curve.NEW] == pytest.approx(sum(hits) / len(hits))
    assert not list((results / "smoke" / "inspired").glob("*.paper.json"))  # no test file


def test_snapshots_and_the_run_record_the_environment_they_were_trained_in(scored):
    *_, folder = scored
    records = [json.loads((folder / "snapshots" / "step-0002" / "snapshot.json").read_text()),
               json.loads((folder / "train_summary.json").read_text())]
    for rec in records:
        env = rec["environment"]
        assert env["torch"] == torch.__version__ and env["threads"] == 1
        assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
        assert env["transformers"] and env["peft"] and env["cpu"]


def test_paired_compares_the_same_cases_from_saved_results(scored, monkeypatch):
    c, results, shared_data, _ = scored
    monkeypatch.setattr(report, "RESULTS", results)
    same = curve.paired("smoke", "inspired", "c", "c", n_boot=200)
    assert [r["step"] for r in same] == [2, 4]
    assert all(r["delta"] == 0 and r["delta_ci95"] == [0, 0] for r in same)
    assert same[0]["cases"] == c["rows"][0]["new_item_cases"]
    assert same[0]["value_a"] == pytest.approx(c["rows"][0][curve.NEW])
    with pytest.raises(FileNotFoundError, match="neither a curve nor a dev result"):
        curve.paired("smoke", "inspired", "c", "popularity")
    pop = experiments.evaluate("smoke", "inspired", "popularity", "paper", shared_data,
                               limit=40, split="dev")
    rows = curve.paired("smoke", "inspired", "c", "popularity", metric="recall@10", n_boot=200)
    hit = {i: float(k is not None and k <= 10) for i, k in zip(pop["case_ids"],
                                                                 pop["case_ranks"])}
    assert [r["step"] for r in rows] == [2, 4] and rows[0]["cases"] == len(hit)
    assert rows[0]["value_b"] == pytest.approx(sum(hit.values()) / len(hit))
    assert rows[0]["delta"] == pytest.approx(rows[0]["value_a"] - rows[0]["value_b"])
    with pytest.raises(ValueError, match="never on the test split"):
        curve.paired("smoke", "inspired", "c", "c", split="test")


def test_the_comparison_table_pairs_two_curves_and_a_reference(scored, monkeypatch):
    import shutil
    c, results, *_ = scored
    monkeypatch.setattr(report, "RESULTS", results)
    folder = results / "smoke" / "inspired"
    assert "not scored yet: d;" in curve.compare_markdown("smoke", "inspired", "c", "d", "c")
    shutil.copytree(folder / "c.curve", folder / "d.curve")  # a second curve, the same lists
    shutil.copy(folder / "c.curve.json", folder / "d.curve.json")
    lines = curve.compare_markdown("smoke", "inspired", "c", "d", "c", n_boot=100).splitlines()
    assert lines[0] == "| step | tokens | cases | c | d | c - d | c - c | d - c |"
    first = c["rows"][0]
    value = report.percent_ci(first[curve.NEW], first[f"{curve.NEW} 95% CI"])
    assert lines[2] == (f"| 2 | {first['tokens']} | {first['new_item_cases']} | {value} | "
                        f"{value} |" + " +0.00 [+0.00, +0.00] |" * 3)
    assert [x.split(" | ")[0] for x in lines if x.startswith("| ")] == ["| step", "| 2", "| 4"]
    assert "dev split, new_items recall@10" in lines[-1]
