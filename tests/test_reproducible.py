"""Runs that reproduce: the same seed and config give bitwise the same weights and metrics (one
thread, this machine), and a saved result is reused only by the model that produced it."""
import dataclasses
import json

import pytest
import torch

from crslib import config
from crslib.training import model, run
from crslib.studies import experiments


def _smoke_cfg(steps: int | None = None) -> config.RunConfig:
    cfg = run.load_config(run.config_path("smoke", "inspired"))
    if steps is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=steps))
    return cfg


@pytest.fixture(scope="module")
def two_runs(shared_data, tmp_path_factory):
    """The smoke INSPIRED GCRS config trained twice, in two folders, one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("runs")
        summaries = [run.train_run(_smoke_cfg(), root / name, shared_data, progress=False)
                     for name in ("a", "b")]
    finally:
        torch.set_num_threads(threads)
    return root, summaries


def test_same_seed_and_config_give_the_same_weights(two_runs):
    root, (a, b) = two_runs
    assert (a["steps"], a["tokens"], a["final_loss"]) == (b["steps"], b["tokens"], b["final_loss"])
    assert a["steps"] == a["steps_total"] == _smoke_cfg().train.max_steps
    assert a["model_hash"] == b["model_hash"] == run.model_hash(root / "a")
    hashes = {model.state_dict_hash(run.load_run(root / x)[0]) for x in ("a", "b")}
    assert len(hashes) == 1


def test_same_weights_give_the_same_metrics(two_runs, shared_data, tmp_path):
    root, _ = two_runs
    results = [experiments.evaluate(run_path=root / x, protocol="paper", data_root=shared_data,
                                    limit=30, out=tmp_path / f"{x}.json") for x in ("a", "b")]
    assert results[0]["metrics"] == results[1]["metrics"]
    assert results[0]["case_ranks"] == results[1]["case_ranks"]
    assert results[0]["model_hash"] == run.model_hash(root / "a")


def test_a_result_is_reused_only_by_the_model_that_made_it(two_runs, shared_data, tmp_path,
                                                            capsys):
    root, _ = two_runs
    folder, out = tmp_path / "run", tmp_path / "gcrs.paper.json"
    torch.set_num_threads(1)
    run.train_run(_smoke_cfg(steps=3), folder, shared_data, progress=False)
    first = experiments.evaluate(run_path=folder, protocol="paper", data_root=shared_data,
                                 limit=20, out=out)
    assert experiments.evaluate(run_path=folder, protocol="paper", data_root=shared_data,
                                limit=20, out=out) == first  # same model: reused
    # retrained with another step count: another model, so the saved result is not reused
    run.train_run(_smoke_cfg(steps=4), folder, shared_data, progress=False)
    capsys.readouterr()
    second = experiments.evaluate(run_path=folder, protocol="paper", data_root=shared_data,
                                  limit=20, out=out)
    assert "recomputing" in capsys.readouterr().out
    assert second["model_hash"] == run.model_hash(folder) != first["model_hash"]
    assert json.loads(out.read_text())["model_hash"] == second["model_hash"]
    # same config hash, other weights on disk (a run folder's model replaced): recomputed too
    saved = json.loads(out.read_text())
    saved["model_hash"] = "0" * 16
    out.write_text(json.dumps(saved))
    third = experiments.evaluate(run_path=folder, protocol="paper", data_root=shared_data,
                                 limit=20, out=out)
    assert third["model_hash"] == run.model_hash(folder)
    assert third["metrics"] == second["metrics"]


def test_model_hash_follows_every_saved_model_file(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.safetensors").write_bytes(b"abc")
    h = run.model_hash(tmp_path)
    (tmp_path / "model" / "w.safetensors").write_bytes(b"abd")
    assert run.model_hash(tmp_path) != h
    (tmp_path / "model" / "w.safetensors").write_bytes(b"abc")
    assert run.model_hash(tmp_path) == h
    (tmp_path / "head.safetensors").write_bytes(b"x")
    assert run.model_hash(tmp_path) != h
    with pytest.raises(FileNotFoundError, match="no saved model files"):
        run.model_hash(tmp_path / "missing")


def test_config_hash_ignores_how_a_run_is_executed():
    cfg = _smoke_cfg()
    same = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threads=2,
                                                              time_limit_minutes=99))
    assert run.config_hash(same) == run.config_hash(cfg)
    assert run.config_hash(_smoke_cfg(steps=7)) != run.config_hash(cfg)


def test_model_hash_ignores_what_only_records_the_machine(tmp_path):
    """Library versions, the base model's local path and peft's model card do not make another
    model; a changed weight or config value does."""
    import json
    from crslib.training import runbase

    m = tmp_path / "run" / "model"
    m.mkdir(parents=True)
    (m / "weights.safetensors").write_bytes(b"\x00\x01\x02")
    (m / "config.json").write_text(json.dumps({"hidden": 8, "transformers_version": "5.24.0"}))
    (m / "adapter_config.json").write_text(json.dumps(
        {"r": 16, "peft_version": "0.21.2", "base_model_name_or_path": "/work/main/.venv/x"}))
    (m / "README.md").write_text("base_model: /work/main/.venv/x")
    before = runbase.model_hash(tmp_path / "run")
    (m / "config.json").write_text(json.dumps({"transformers_version": "5.25.0", "hidden": 8},
                                              indent=2))
    (m / "adapter_config.json").write_text(json.dumps(
        {"r": 16, "peft_version": "0.22.0", "base_model_name_or_path": "/tmp/clone/.venv/x"}))
    (m / "README.md").write_text("base_model: /tmp/clone/.venv/x")
    assert runbase.model_hash(tmp_path / "run") == before
    (m / "config.json").write_text(json.dumps({"hidden": 9, "transformers_version": "5.25.0"}))
    assert runbase.model_hash(tmp_path / "run") != before
    (m / "config.json").write_text(json.dumps({"hidden": 8}))
    assert runbase.model_hash(tmp_path / "run") == before
    (m / "weights.safetensors").write_bytes(b"\x00\x01\x03")
    assert runbase.model_hash(tmp_path / "run") != before


def test_every_kind_fits_by_its_config_to_the_weights_of_its_run(two_runs, shared_data):
    """The lifecycle's fit: an unfitted recommender of the config's kind, fitted on the loaded
    data into a temporary folder, holds the weights of the same config trained into a run
    folder, and ranks after that folder is gone; a baseline fits to its saved ranking."""
    from crslib import data
    from crslib.evaluation import evaluate, recommenders
    root, _ = two_runs
    ds = data.load("inspired", shared_data)
    torch.set_num_threads(1)
    rec = recommenders.GenerativeRecommender()
    assert rec.fit(_smoke_cfg(), ds) is rec
    assert model.state_dict_hash(rec.model) == model.state_dict_hash(run.load_run(root / "a")[0])
    cases = evaluate.rec_cases(ds, rec.sids, "test", "gcrs", limit=6)
    assert rec.ranks(cases, "paper") == recommenders.load_recommender(root / "a").ranks(
        cases, "paper")
    pop = recommenders.BaselineRecommender("popularity")
    assert pop.fit(_smoke_cfg(), ds) is pop and (pop.sids.codes == rec.sids.codes).all()
    assert pop.ranks(cases, "paper") == recommenders.load_recommender(
        "popularity", "inspired", "smoke", data_root=shared_data).ranks(cases, "paper")
    with pytest.raises(ValueError, match="the data given is 'redial'"):
        recommenders.GenerativeRecommender().fit(_smoke_cfg(),
                                                 dataclasses.replace(ds, name="redial"))
    with pytest.raises(ValueError, match="unknown baseline 'oracle'"):
        recommenders.BaselineRecommender("oracle")


def test_the_item_head_kind_fits_into_a_run_folder_and_loads_back(shared_data, tmp_path):
    from crslib import data
    from crslib.evaluation import evaluate, recommenders
    ds = data.load("inspired", shared_data)
    rc = run.load_config(run.config_path("smoke", "inspired", "decoupled"))
    torch.set_num_threads(1)
    fitted = recommenders.fit(rc, tmp_path / "head", ds=ds)
    assert isinstance(fitted, recommenders.ItemHeadRecommender) and fitted.config == rc
    back = recommenders.load_recommender(tmp_path / "head")
    cases = evaluate.rec_cases(ds, back.sids, "test", rc.format, limit=6)
    assert back.ranks(cases, "community") == fitted.ranks(cases, "community")
    assert back.top(cases, 3) == fitted.top(cases, 3)
