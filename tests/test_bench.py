"""The benchmark driver (``benchmarks/run_all.py``) and the README table
(``benchmarks/readme_table.py``) on fake inputs: collection, merging, rendering, block
replacement. Nothing is timed here."""
import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_all = _load("run_all")
readme_table = _load("readme_table")

MACHINE = {"cpu_count": 2, "torch": "2.13.0", "python": "3.12.0", "platform": "Linux-x",
           "threads": 1, "commit": "abc1234", "date": "2025-01-02T03:04:05+00:00",
           "loadavg_start": [1.5, 1.0, 0.5], "loadavg_end": [2.0, 1.0, 0.5], "wall_s": 321.0}
TRAIN_REPORT = {"config": "crslib/configs/cpu-redial-gcrs.json", "dialogs": 150, "steps": 16,
                "threads": 1, "quick": False, "loop_tokens": 1000, "bare_tokens": 1000,
                "loop_tokens_per_s": 900, "bare_tokens_per_s": 1000, "ratio": 0.9}
IDS_REPORT = {"dataset": "redial", "items": 6924, "catalog_load_s": 0.5, "encode_warm_s": 0.25,
              "rqvae_s": 40.0, "rqkmeans_s": 10.0, "rqvae": {"unique": True},
              "rqkmeans": {"unique": True}, "ratios": {"rqvae_over_rqkmeans": 4.0},
              "within_limits": {"rqvae_s": True, "rqkmeans_s": True}}


def _entry(name, report, date="2025-01-02T03:04:05+00:00"):
    return {"script": f"benchmarks/{run_all.BENCHMARKS[name]['script']}", "command": ["python"],
            "seconds": 1.0, "date": date, **run_all.split_part(name, report)}


def test_split_part_separates_config_values_and_ratios():
    part = run_all.split_part("train", TRAIN_REPORT)
    assert part == {
        "config": {"config": "crslib/configs/cpu-redial-gcrs.json", "dialogs": 150, "steps": 16,
                   "threads": 1, "quick": False},
        "values": {"loop_tokens_per_s": 900, "bare_tokens_per_s": 1000, "loop_tokens": 1000,
                   "bare_tokens": 1000},
        "ratios": {"loop_over_bare": 0.9}}
    ids = run_all.split_part("ids", IDS_REPORT)  # dotted ratio key, absent encode_cold_s
    assert ids["ratios"] == {"rqvae_over_rqkmeans": 4.0}
    assert ids["config"] == {"dataset": "redial", "items": 6924}
    assert "encode_cold_s" not in ids["values"] and ids["values"]["rqvae_s"] == 40.0


def test_rows_format_what_and_check_goals():
    rows = run_all.rows({"train": _entry("train", TRAIN_REPORT), "ids": _entry("ids", IDS_REPORT)})
    assert [r["name"] for r in rows] == ["SIDs: RQ-VAE", "SIDs: RQ-KMeans", "training loop"]
    vae, km, tr = rows
    assert vae == {"name": "SIDs: RQ-VAE", "what": "build from cached embeddings (fit, codes, "
                   "collision re-assignment), 6924 redial items", "value": 40.0, "unit": "s",
                   "ratio": 4.0, "vs": "RQ-KMeans", "goal": "< 60 s (issue)", "met": True}
    assert km["ratio"] is None and km["met"] is True
    assert tr["what"] == ("unpadded tokens/s of `train.train`, 16 steps, 150 ReDial dialogs, "
                          "`crslib/configs/cpu-redial-gcrs.json`")
    assert (tr["value"], tr["ratio"], tr["met"]) == (900, 0.9, True)  # >= 0.9 holds at 0.9
    slow = run_all.rows({"train": _entry("train", {**TRAIN_REPORT, "ratio": 0.5})})
    assert slow[0]["met"] is False


def test_rows_of_skipped_and_failed_benchmarks():
    rows = run_all.rows({"decode_cpu": {"skipped": "skipped: no run"},
                         "train": {"script": "x", "error": "Traceback ... boom"}})
    assert [r["name"] for r in rows] == [
        "decode_cpu: constrained beam", "decode_cpu: exact scoring", "decode_cpu: evaluation beam",
        "decode_cpu: validity", "training loop"]
    assert all(r["value"] is None and r["met"] is None for r in rows)
    assert rows[0]["what"] == "skipped: no run"
    assert rows[-1]["what"] == "failed: Traceback ... boom"


def test_collect_merges_old_entries_from_the_same_machine_only():
    old = run_all.collect({"ids": _entry("ids", IDS_REPORT, "old"),
                           "train": _entry("train", TRAIN_REPORT, "old")}, MACHINE, False)
    new_train = _entry("train", {**TRAIN_REPORT, "ratio": 0.95}, "new")
    merged = run_all.collect({"train": new_train}, {**MACHINE, "date": "later"}, False, old)
    assert list(merged["benchmarks"]) == ["ids", "train"]  # the driver's order
    assert merged["benchmarks"]["ids"]["date"] == "old"  # kept, with its own date
    assert merged["benchmarks"]["train"] == new_train
    assert merged["machine"]["date"] == "later" and merged["quick"] is False
    assert [r["ratio"] for r in merged["rows"] if r["name"] == "training loop"] == [0.95]
    assert json.loads(json.dumps(merged)) == merged  # plain JSON

    other = run_all.collect({"train": new_train}, {**MACHINE, "cpu_count": 16}, False, old)
    assert list(other["benchmarks"]) == ["train"]  # another machine: old entries dropped
    quick = run_all.collect({"train": new_train}, MACHINE, True, old)
    assert list(quick["benchmarks"]) == ["train"]  # quick never mixes with full-size numbers


def test_main_quick_runs_every_script_with_quick_and_writes_one_json(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, cwd, env, text, capture_output, timeout):
        calls.append((cmd, env["OMP_NUM_THREADS"]))
        name = Path(cmd[cmd.index("--out") + 1]).stem
        report = {"ids": IDS_REPORT, "train": TRAIN_REPORT}.get(name, {"prompts": 8})
        Path(cmd[cmd.index("--out") + 1]).write_text(json.dumps(report))
        return type("P", (), {"returncode": 0, "stderr": ""})()

    monkeypatch.setattr(run_all.subprocess, "run", fake_run)
    monkeypatch.setattr(run_all, "machine", lambda threads: dict(MACHINE, threads=threads))
    monkeypatch.setitem(run_all.BENCHMARKS, "decode_cpu",
                        {**run_all.BENCHMARKS["decode_cpu"], "requires": "no/such/run"})
    out = tmp_path / "bench.json"
    assert run_all.main(["--quick", "--out", str(out), "--parts", str(tmp_path / "parts")]) == 0
    scripts = [Path(c[1]).name for c, _ in calls]
    assert scripts == ["bench_ids.py", "bench_decode.py", "bench_train.py",
                       "bench_train.py", "bench_score.py", "bench_chat.py"]  # decode_cpu skipped; train_smollm2
    # is bench_train
    assert all("--quick" in c and threads == "1" for c, threads in calls)
    assert "--threads" not in calls[0][0] and calls[1][0][calls[1][0].index("--threads") + 1] == "1"
    bench = json.loads(out.read_text())
    assert bench["quick"] is True and bench["machine"]["threads"] == 1
    assert list(bench["benchmarks"]) == ["ids", "decode_tiny", "decode_cpu", "train",
                                         "train_smollm2", "score_smollm2", "chat_reply"]
    assert bench["benchmarks"]["decode_cpu"] == {
        "skipped": "skipped: no/such/run not found (train that run first)"}
    assert bench["benchmarks"]["train"]["command"] == [
        "python", "benchmarks/bench_train.py", "--dialogs", "150", "--steps", "16",
        "--threads", "1", "--quick"]
    assert bench["benchmarks"]["train"]["ratios"] == {"loop_over_bare": 0.9}
    assert bench["benchmarks"]["decode_tiny"]["config"] == {"prompts": 8}


def test_main_reports_a_failed_benchmark(tmp_path, monkeypatch):
    def failing(cmd, **kw):
        return type("P", (), {"returncode": 1, "stderr": "boom"})()

    monkeypatch.setattr(run_all.subprocess, "run", failing)
    monkeypatch.setattr(run_all, "machine", lambda threads: dict(MACHINE))
    out = tmp_path / "bench.json"
    assert run_all.main(["--only", "train", "--out", str(out)]) == 1
    entry = json.loads(out.read_text())["benchmarks"]["train"]
    assert entry["error"] == "boom" and "values" not in entry


BENCH_JSON = {"machine": MACHINE, "quick": False, "rows": [
    {"name": "SIDs: RQ-VAE", "what": "build, 6924 redial items", "value": 40.0, "unit": "s",
     "ratio": 4.0, "vs": "RQ-KMeans", "goal": "< 60 s (issue)", "met": True},
    {"name": "training loop", "what": "a | b", "value": 6453.2, "unit": "tok/s", "ratio": 0.8123,
     "vs": "bare", "goal": ">= 0.9x bare", "met": False},
    {"name": "decode_cpu: validity", "what": "skipped: no run", "value": None, "unit": "",
     "ratio": None, "vs": None, "goal": "= 1", "met": None}]}
TABLE = (
    "Last run 2025-01-02T03:04:05+00:00 on 2 CPUs (Linux-x), torch 2.13.0, 1 thread(s) per "
    "benchmark, load average [1.5, 1.0, 0.5] at the start, 321 s in all, commit abc1234.\n\n"
    "| name | what | value | ratio | goal |\n"
    "|---|---|---|---|---|\n"
    "| SIDs: RQ-VAE | build, 6924 redial items | 40 s | 4x RQ-KMeans | < 60 s (issue) (met) |\n"
    "| training loop | a \\| b | 6,453 tok/s | 0.812x bare | >= 0.9x bare (**not met**) |\n"
    "| decode_cpu: validity | skipped: no run | - | - | = 1 |\n")


def test_render_table():
    assert readme_table.render(BENCH_JSON) == TABLE
    quick = readme_table.render({**BENCH_JSON, "quick": True})
    assert "quick mode: toy sizes, numbers not comparable" in quick.split("\n")[0]


@pytest.mark.parametrize("v, text", [(0.5, "0.5"), (1.0999, "1.1"), (235.06, "235"),
                                     (1804.6, "1,805"), (None, "-"), (True, "True")])
def test_number(v, text):
    assert readme_table.number(v) == text


def test_replace_block_appends_then_replaces_in_place():
    readme = "# crslib\n\nIntro.\n"
    first = readme_table.replace_block(readme, "old table\n")
    assert first == ("# crslib\n\nIntro.\n\n" + readme_table.SECTION
                     + "<!-- bench:start -->\nold table\n<!-- bench:end -->\n")
    assert first.count("## Benchmarks") == 1
    edited = first.replace("Intro.", "Intro, edited.") + "\n## Later section\n"
    second = readme_table.replace_block(edited, "new table\n")
    assert second == edited.replace("old table", "new table")  # only the block changes
    assert readme_table.replace_block(second, "new table\n") == second  # idempotent


def test_main_writes_the_readme(tmp_path):
    (tmp_path / "bench.json").write_text(json.dumps(BENCH_JSON))
    (tmp_path / "README.md").write_text("# x\n")
    readme_table.main([str(tmp_path / "bench.json"), str(tmp_path / "README.md")])
    text = (tmp_path / "README.md").read_text()
    assert text.endswith("<!-- bench:start -->\n" + TABLE + "<!-- bench:end -->\n")


def test_same_machine_ignores_the_sandbox_kernel_build_only():
    a = {"cpu_count": 2, "torch": "2.13.0+cpu", "threads": 1,
         "platform": "Linux-6.18.44-fc-v657-x86_64-with-glibc2.36"}
    assert run_all.same_machine(a, {**a, "platform": "Linux-6.18.44-fc-v1252-x86_64-with-glibc2.36"})
    assert not run_all.same_machine(a, {**a, "platform": "Linux-6.18.44-fc-v657-aarch64-with-glibc2.36"})
    assert not run_all.same_machine(a, {**a, "cpu_count": 4})
