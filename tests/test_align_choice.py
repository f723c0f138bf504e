"""The alignment ratio is chosen on validation data by a written rule, never on the test split."""
import json

import pytest

from crslib import report
from crslib.studies import align_choice


def _row(variant, ratio, new, items="catalog"):
    return {"variant": variant, "ratio": ratio, "items": items, "new_items recall@10": new}


def test_pick_takes_the_best_new_item_recall_and_ties_to_the_smaller_ratio_then_the_catalog():
    rows = [_row("a4", 4.0, 0.20), _row("a1", 1.0, 0.20), _row("a025", 0.25, 0.10),
            _row("gcrs", None, 0.50)]  # a reference is never chosen
    assert align_choice.pick(rows)["variant"] == "a1"
    assert align_choice.pick(rows[2:])["variant"] == "a025"
    named = [_row("n1", 1.0, 0.20, "dialogs"), *rows]
    assert align_choice.pick(named)["variant"] == "a1"
    assert align_choice.pick([_row("n1", 1.0, 0.21, "dialogs"), *rows])["variant"] == "n1"
    old = [{k: v for k, v in r.items() if k != "items"} for r in rows]  # saved before pools
    assert align_choice.pick(old)["variant"] == "a1"
    with pytest.raises(ValueError, match="no alignment candidate"):
        align_choice.pick([_row("gcrs", None, 0.5)])


def test_the_pretrained_profile_tries_three_recipes_per_dataset():
    assert align_choice.candidates("smollm2", "inspired") == {
        "gcrs_align_r025": {"ratio": 0.25, "items": "catalog"},
        "gcrs_align": {"ratio": 1.0, "items": "catalog"},
        "gcrs_align_r4": {"ratio": 4.0, "items": "catalog"}}
    assert align_choice.candidates("smollm2", "redial") == {
        "gcrs_align_r025": {"ratio": 0.25, "items": "catalog"},
        "gcrs_align_named_r025": {"ratio": 0.25, "items": "dialogs"},
        "gcrs_align": {"ratio": 1.0, "items": "catalog"}}


def test_labels_name_the_ratio_and_a_pool_of_dialog_items():
    assert align_choice.label({"ratio": 0.25, "items": "catalog"}) == (
        "GCRS + item-ID alignment, ratio 0.25 (beyond the paper)")
    assert align_choice.label({"ratio": 1.0, "items": "dialogs"}, short=True) == (
        "GCRS + align 1, dialog items")


def test_choose_scores_on_validation_and_saves_the_table(shared_data, tmp_path, monkeypatch):
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    out = align_choice.choose("smoke", "inspired", data_root=shared_data,
                              cands={"repeat": {"ratio": 2.0, "items": "catalog"},
                                     "popularity": {"ratio": 0.5, "items": "dialogs"}},
                              references=(), say=lambda *_: None)
    rows = {r["variant"]: r for r in out["rows"]}
    assert out["split"] == "dev" and set(rows) == {"repeat", "popularity"}
    best = max(rows.values(), key=lambda r: (r["new_items recall@10"], -r["ratio"]))
    assert (out["chosen_variant"], out["chosen_ratio"], out["chosen_items"]) == (
        best["variant"], best["ratio"], best["items"])
    assert align_choice.load("smoke", "inspired") == json.loads(json.dumps(out))
    folder = tmp_path / "smoke" / "inspired"
    assert not list(folder.glob("*.paper.json"))  # no test-split file was written
    for v in rows:
        saved = json.loads((folder / "dev" / f"{v}.paper.json").read_text())
        assert saved["split"] == "dev" and saved["n_cases"] == rows[v]["cases"]


def test_the_choice_table_shows_percent_the_interval_and_the_chosen_row(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    assert "not chosen yet" in align_choice.markdown("p")
    row = {"cases": 10, "new_item_cases": 8, "recall@1": 0.1, "recall@10": 0.25,
           "ndcg@10": 0.125, "new_items recall@10": 0.125, "new_items recall@10 95% CI": [0, 0.375]}
    report.write_json({"split": "dev", "rule": "R", "metric": "new_items recall@10",
                       "chosen_variant": "a1",
                       "rows": [{"variant": "a1", "ratio": 1.0, **row},
                                {"variant": "gcrs", "ratio": None, **row}]},
                      tmp_path / "p" / "inspired" / "align_choice.json")
    lines = align_choice.markdown("p").splitlines()
    # a row saved before item pools was drawn from the whole catalog
    assert lines[2] == ("| a1 | 1 | catalog | 10 | 10.00 | 25.00 | 12.50 | 12.50 [0.00, 37.50] (8) "
                        "| yes |")
    assert lines[3].startswith("| gcrs | - | - |") and lines[3].endswith("|  |")
    assert lines[-1] == "dev split; rule: R."


def test_the_alignment_claims_are_about_each_datasets_validation_choice(tmp_path, monkeypatch):
    from crslib.studies import claims
    monkeypatch.setattr(report, "RESULTS", tmp_path)

    def aligned():
        return {(c.dataset, c.a) for c in claims.profile_claims("smollm2")
                if c.claim.startswith("beyond")}
    before = claims.profile_claims("smollm2")
    assert aligned() == {("inspired", "gcrs_align"), ("redial", "gcrs_align")}  # nothing chosen
    report.write_json({"chosen_variant": "gcrs_align_r4", "chosen_ratio": 4.0},
                      tmp_path / "smollm2" / "inspired" / "align_choice.json")
    assert aligned() == {("inspired", "gcrs_align_r4"), ("redial", "gcrs_align_r4")}  # takes INSPIRED's
    report.write_json({"chosen_variant": "gcrs_align_named_r025", "chosen_ratio": 0.25},
                      tmp_path / "smollm2" / "redial" / "align_choice.json")
    assert aligned() == {("inspired", "gcrs_align_r4"), ("redial", "gcrs_align_named_r025")}
    after = claims.profile_claims("smollm2")
    assert [c for c in after if not c.claim.startswith("beyond")] == [
        c for c in before if not c.claim.startswith("beyond")]


@pytest.mark.parametrize("dataset", ["inspired", "redial"])
def test_a_saved_choice_follows_its_own_rule_on_validation(dataset):
    """Each dataset's saved choice picked by the rule among its own configs, on its validation
    split, with the recipe its config trains."""
    from crslib import config, data
    from crslib.training import run
    choice = align_choice.load("smollm2", dataset)
    if choice is None:
        pytest.skip(f"no alignment recipe chosen on {dataset} yet")
    assert choice["split"] == data.VALIDATION[dataset] != "test"
    chosen = choice["chosen_variant"]
    assert chosen == align_choice.pick(choice["rows"])["variant"]  # the saved table's own rule
    cands = align_choice.candidates("smollm2", dataset)
    assert {r["variant"] for r in choice["rows"] if r["ratio"] is not None} == set(cands)
    trained = config.load(run.config_path("smollm2", dataset, chosen)).train.align
    assert trained.ratio == choice["chosen_ratio"]
    assert trained.items == choice.get("chosen_items", "catalog")


def test_held_out_reads_only_saved_test_results_of_the_same_model(tmp_path, monkeypatch):
    from crslib.evaluation import result_files
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    assert align_choice.held_out("p", "redial") == []
    metric = "new_items recall@10"
    rows = [{"variant": v, "ratio": r, "model_hash": h, metric: x, f"{metric} 95% CI": [0, 1],
             "cases": 5, "new_item_cases": 4, "recall@1": 0, "recall@10": 0, "ndcg@10": 0}
            for v, r, h, x in [("a1", 1.0, "h1", 0.30), ("a2", 2.0, "h2", 0.20),
                               ("old", 4.0, "h3", 0.10), ("few", 8.0, "h4", 0.05),
                               ("popularity", None, None, 0.25)]]
    report.write_json({"split": "valid", "rule": "R", "metric": metric, "chosen_variant": "a1",
                       "rows": rows}, tmp_path / "p" / "redial" / "align_choice.json")

    def saved(variant, h, x, limit=None):
        report.write_json({"model_hash": h, "limit": limit, "n_cases": 40,
                           "metrics": {"recall@10": x}, "ci95": {"recall@10": [0.0, 0.5]}},
                          result_files.result_path("p", "redial", variant, "new_items"))
    saved("a1", "h1", 0.10)
    saved("a2", "h2", 0.20)
    saved("old", "another model", 0.9)  # a result is reused only by the model that produced it
    saved("few", "h4", 0.9, limit=10)  # a sample says nothing about the full split
    saved("popularity", None, 0.20)
    got = align_choice.held_out("p", "redial")
    assert [(r["variant"], r["chosen"], r["valid"], r["test"], r["test cases"]) for r in got] == [
        ("a1", True, 0.30, 0.10, 40), ("a2", False, 0.20, 0.20, 40),
        ("popularity", False, 0.25, 0.20, 40)]
    assert not list((tmp_path / "p" / "redial").glob("valid"))  # nothing scored
    text = align_choice.markdown("p", "redial")
    assert "| a1 (chosen) | 30.00 [0.00, 100.00] | 10.00 [0.00, 50.00] (40) |" in text
    assert text.rstrip().endswith("valid order: a1 > popularity > a2; "
                                  "test order: a2 = popularity > a1.")
