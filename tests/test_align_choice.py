"""The alignment ratio is chosen on validation data by a written rule, never on the test split."""
import json

import pytest

from crslib import report
from crslib.studies import align_choice


def _row(variant, ratio, new):
    return {"variant": variant, "ratio": ratio, "new_items recall@10": new}


def test_pick_takes_the_best_new_item_recall_and_ties_to_the_smaller_ratio():
    rows = [_row("a4", 4.0, 0.20), _row("a1", 1.0, 0.20), _row("a025", 0.25, 0.10),
            _row("gcrs", None, 0.50)]  # a reference is never chosen
    assert align_choice.pick(rows)["variant"] == "a1"
    assert align_choice.pick(rows[2:])["variant"] == "a025"
    with pytest.raises(ValueError, match="no alignment candidate"):
        align_choice.pick([_row("gcrs", None, 0.5)])


def test_the_pretrained_profile_tries_three_ratios_on_inspired():
    assert align_choice.candidates("smollm2", "inspired") == {
        "gcrs_align_r025": 0.25, "gcrs_align": 1.0, "gcrs_align_r4": 4.0}


def test_choose_scores_on_validation_and_saves_the_table(shared_data, tmp_path, monkeypatch):
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    out = align_choice.choose("smoke", "inspired", data_root=shared_data,
                              ratios={"repeat": 2.0, "popularity": 0.5}, references=(),
                              say=lambda *_: None)
    rows = {r["variant"]: r for r in out["rows"]}
    assert out["split"] == "dev" and set(rows) == {"repeat", "popularity"}
    best = max(rows.values(), key=lambda r: (r["new_items recall@10"], -r["ratio"]))
    assert (out["chosen_variant"], out["chosen_ratio"]) == (best["variant"], best["ratio"])
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
    assert lines[2] == "| a1 | 1 | 10 | 10.00 | 25.00 | 12.50 | 12.50 [0.00, 37.50] (8) | yes |"
    assert lines[3].startswith("| gcrs | - |") and lines[3].endswith("|  |")
    assert lines[-1] == "dev split; rule: R."


def test_the_alignment_claims_are_about_the_variant_chosen_on_validation(tmp_path, monkeypatch):
    from crslib.studies import claims
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    before = claims.profile_claims("smollm2")
    assert {c.a for c in before if c.claim.startswith("beyond")} == {"gcrs_align"}
    report.write_json({"chosen_variant": "gcrs_align_r4", "chosen_ratio": 4.0},
                      tmp_path / "smollm2" / "inspired" / "align_choice.json")
    after = claims.profile_claims("smollm2")
    assert {c.a for c in after if c.claim.startswith("beyond")} == {"gcrs_align_r4"}
    assert [c for c in after if not c.claim.startswith("beyond")] == [
        c for c in before if not c.claim.startswith("beyond")]


def test_redial_trains_the_ratio_chosen_on_inspired_validation():
    """The other dataset takes the ratio chosen on INSPIRED dev, as it takes the step budget."""
    from crslib import config
    from crslib.training import run
    choice = align_choice.load("smollm2", "inspired")
    if choice is None:
        pytest.skip("no alignment ratio chosen yet")
    chosen = choice["chosen_variant"]
    assert chosen == align_choice.pick(choice["rows"])["variant"]  # the saved table's own rule
    redial = config.load(run.config_path("smollm2", "redial", chosen))
    assert redial.train.align.ratio == choice["chosen_ratio"]
    assert list(align_choice.candidates("smollm2", "redial")) == [chosen]
