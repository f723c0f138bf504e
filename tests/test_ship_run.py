"""tools/ship_run.py --park: an unfinished run's checkpoint, config, log and snapshots are staged
(never a save in progress), a run being trained is refused, and shipping the finished run
unstages the parked work folder."""
import json
import subprocess
from pathlib import Path

import pytest
from filelock import FileLock


@pytest.fixture
def tool(load_script):
    return load_script("tools/ship_run.py")


def _write(path: Path, text: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _staged(repo: Path) -> list[str]:
    out = subprocess.run(["git", "diff", "--cached", "--name-only"], cwd=repo, check=True,
                         capture_output=True, text=True).stdout
    return sorted(out.splitlines())


@pytest.fixture
def repo(tmp_path, monkeypatch):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    # a repository that ignores runs/ must still take a parked run (git add -f)
    _write(tmp_path / ".gitignore", "/runs/*\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _unfinished(repo: Path) -> Path:
    folder = Path("runs/smollm2/redial/curve")
    work = folder / "work-abc123"
    _write(repo / work / "checkpoint" / "state.pt", "weights+optimizer")
    _write(repo / work / "checkpoint.tmp" / "state.pt", "half-written")
    _write(repo / work / "config.json", "{}")
    _write(repo / work / "log.jsonl", "{}\n")
    snap = folder / "snapshots" / "step-0010"
    _write(repo / snap / "model" / "weights.bin", "w")
    _write(repo / snap / "snapshot.json", json.dumps({"step": 10, "model_hash": "old"}))
    return folder


def test_park_stages_the_checkpoint_and_snapshots_not_a_save_in_progress(repo, tool):
    folder = _unfinished(repo)
    out = tool.park(folder)
    assert out["work"] == ["work-abc123"] and list(out["snapshots"]) == ["step-0010"]
    base = "runs/smollm2/redial/curve/"
    assert _staged(repo) == [base + p for p in (
        "snapshots/step-0010/model/weights.bin", "snapshots/step-0010/snapshot.json",
        "work-abc123/checkpoint/state.pt", "work-abc123/config.json", "work-abc123/log.jsonl")]
    # the snapshot's record names the hash of the weights it holds
    record = json.loads((repo / folder / "snapshots/step-0010/snapshot.json").read_text())
    assert record["model_hash"] == out["snapshots"]["step-0010"] != "old"


def test_park_refuses_a_run_in_training_and_a_run_without_checkpoint(repo, tool):
    folder = _unfinished(repo)
    with FileLock(repo / folder / ".lock", timeout=0):
        with pytest.raises(SystemExit, match="being trained right now"):
            tool.park(folder)
    empty = Path("runs/smollm2/redial/empty")
    _write(repo / empty / "work-1" / "log.jsonl")
    with pytest.raises(SystemExit, match="no work folder with a checkpoint"):
        tool.park(empty)
    assert _staged(repo) == []


def test_shipping_the_finished_run_unstages_its_parked_work_folder(repo, tool, monkeypatch):
    folder = _unfinished(repo)
    tool.park(folder)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "park"],
                   cwd=repo, check=True)
    _write(repo / folder / "model" / "weights.bin", "final")
    _write(repo / folder / "train_summary.json", "{}")
    monkeypatch.setattr(tool.run, "saved_config", lambda f: None)
    monkeypatch.setattr(tool.run, "is_finished", lambda cfg, f: True)
    out = tool.ship(folder)
    assert out["unparked"] == 3
    tracked = subprocess.run(["git", "ls-files", "--", str(folder)], cwd=repo, check=True,
                             capture_output=True, text=True).stdout.split()
    assert not [p for p in tracked if "/work-" in p]
    assert (repo / folder / "work-abc123" / "checkpoint" / "state.pt").is_file()  # kept on disk
    assert str(folder / "model" / "weights.bin") in _staged(repo)
