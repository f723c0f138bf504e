"""tools/migrate_configs.py: a run folder and a result written before typed configs get the new
config hash (and format/ranker), an unfinished run's work folder follows, a live run is left
alone, and a second pass changes nothing."""
import json

from crslib import config
from crslib.training import run



def _legacy(variant: str) -> dict:
    raw = json.loads(run.config_path("smoke", "inspired", variant).read_text())
    return {k: v for k, v in raw.items() if k not in ("format", "ranker")}


def test_old_runs_and_results_get_the_new_hash(tmp_path, capsys, load_script):
    tool = load_script("tools/migrate_configs.py")
    runs, results = tmp_path / "runs", tmp_path / "results"
    for variant in ("sid", "decoupled"):
        old = _legacy(variant)
        h = tool.legacy_hash(old)
        folder = runs / "smoke" / "inspired" / variant
        (folder / "model").mkdir(parents=True)
        (folder / f"work-{h}").mkdir()
        (folder / "config.json").write_text(json.dumps({**old, "config_hash": h}))
        (results / "smoke").mkdir(parents=True, exist_ok=True)
        (results / "smoke" / f"{variant}.paper.json").write_text(json.dumps({"config_hash": h}))
    unfinished = runs / "smoke" / "inspired" / "gcrs"  # only a work folder, no live lock
    (unfinished / f"work-{tool.legacy_hash(_legacy('gcrs'))}").mkdir(parents=True)
    (unfinished / ".lock").write_text("")  # a lock file nobody holds
    live = runs / "smoke" / "inspired" / "tiger"  # being trained: left alone
    (live / f"work-{tool.legacy_hash(_legacy('tiger'))}").mkdir(parents=True)
    held = run.run_lock(live)
    held.__enter__()

    assert tool.main(["--runs", str(runs), "--results", str(results)]) == 1  # one skipped
    for variant, fmt, ranker in (("sid", "sid", "generative"), ("decoupled", "gcrs", "item_head")):
        new = config.config_hash(config.load(run.config_path("smoke", "inspired", variant)))
        folder = runs / "smoke" / "inspired" / variant
        saved = json.loads((folder / "config.json").read_text())
        assert (saved["config_hash"], saved["format"], saved["ranker"]) == (new, fmt, ranker)
        assert [p.name for p in folder.glob("work-*")] == [f"work-{new}"]
        assert json.loads((results / "smoke" / f"{variant}.paper.json").read_text()) == {
            "config_hash": new}
    gcrs_new = config.config_hash(config.load(run.config_path("smoke", "inspired", "gcrs")))
    assert [p.name for p in unfinished.glob("work-*")] == [f"work-{gcrs_new}"]
    assert [p.name for p in live.glob("work-*")] == [
        f"work-{tool.legacy_hash(_legacy('tiger'))}"]
    assert "SKIPPED" in capsys.readouterr().out
    held.__exit__(None, None, None)
    assert tool.main(["--runs", str(runs), "--results", str(results)]) == 0
    tiger_new = config.config_hash(config.load(run.config_path("smoke", "inspired", "tiger")))
    assert [p.name for p in live.glob("work-*")] == [f"work-{tiger_new}"]
    assert tool.main(["--runs", str(runs), "--results", str(results)]) == 0
    assert capsys.readouterr().out.strip().endswith("nothing to migrate")
