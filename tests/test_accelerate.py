"""Data-parallel training through ``accelerate launch``: two CPU processes (gloo) train the smoke
config into one run folder, the same model one process trains (up to the order of float sums),
and the run loads and scores like any other.

``accelerate launch --cpu --num_processes 2`` starts a single process unless MPI is installed
(accelerate 1.15 launches several CPU processes through ``mpirun``); the torchrun-based launcher
with the CPU flag, ``ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2``,
starts two, and that is what runs here. On GPUs the README's command needs neither.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crslib.training import run, runbase
from crslib.studies import experiments

CONFIG = run.config_path("smoke", "inspired")


@pytest.fixture(scope="module")
def launched(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("accelerate")
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "CRSLIB_DATA": str(shared_data),
           "OMP_NUM_THREADS": "1"}
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
           "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "crslib", "train",
           "--config", str(CONFIG), "--out", str(root / "two"), "--quiet", "--threads", "1"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    torch.set_num_threads(1)
    one = run.train_run(run.load_config(CONFIG), root / "one", shared_data, progress=False)
    return root, json.loads((root / "two" / "train_summary.json").read_text()), one


def test_two_processes_train_the_model_one_process_trains(launched):
    root, two, one = launched
    assert two["processes"] == 2 and one["processes"] == 1
    assert (two["steps"], two["tokens"]) == (one["steps"], one["tokens"])
    assert two["final_loss"] == pytest.approx(one["final_loss"], rel=1e-5)
    a, b = (run.load_run(root / name)[0].state_dict() for name in ("two", "one"))
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a)
    assert not runbase.is_locked(root / "two")  # the main process held it and let it go


def test_the_launched_run_loads_and_scores(launched, shared_data, tmp_path):
    root, two, _ = launched
    result = experiments.evaluate(run_path=root / "two", protocol="paper", data_root=shared_data,
                                  limit=20, out=tmp_path / "two.paper.json")
    assert result["n_cases"] == 20 and result["model_hash"] == two["model_hash"]
    assert 0.0 <= result["metrics"]["recall@10"] <= 100.0
