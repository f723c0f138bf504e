"""The variant configs are generated from each profile's ``gcrs`` config (tools/make_configs.py);
a ``gcrs`` config edited without re-running the generator would leave the variants stale."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "crslib" / "configs"


@pytest.fixture(scope="module")
def make_configs(load_script):
    return load_script("tools/make_configs.py")


VARIANT_FILES = sorted(p for p in CONFIGS.glob("*.json") if not p.name.endswith("-gcrs.json")
                       or p.name.startswith("smollm2-"))


@pytest.mark.parametrize("path", VARIANT_FILES, ids=lambda p: p.stem)
def test_variant_config_matches_its_generator(path, make_configs):
    profile, dataset, variant = path.stem.split("-", 2)
    if profile == "smollm2":  # the pretrained profile is generated from the cpu profile's gcrs
        cpu = json.loads((CONFIGS / f"cpu-{dataset}-gcrs.json").read_text())
        want = make_configs.smollm2_configs(cpu)[variant]
    else:
        base = json.loads((CONFIGS / f"{profile}-{dataset}-gcrs.json").read_text())
        want = make_configs.variant_config(base, variant)
    assert json.loads(path.read_text()) == want, (
        f"{path.name} is stale: run `python tools/make_configs.py`")


SMOLLM2 = sorted(CONFIGS.glob("smollm2-*.json"))


@pytest.mark.parametrize("path", SMOLLM2, ids=lambda p: p.stem)
def test_smollm2_variants_differ_from_gcrs_only_in_format_sids_embeddings_or_seed(path):
    """Issue 21: every variant of the pretrained profile is the gcrs recipe with one change."""
    from crslib import config
    dataset = path.stem.split("-")[1]
    base = config.load(CONFIGS / f"smollm2-{dataset}-gcrs.json").identity()
    mine = config.load(path).identity()
    assert mine["model"] == base["model"] and mine["profile"] == "smollm2"
    assert mine["train_splits"] == base["train_splits"] and mine["eval"] == base["eval"]
    variant = path.stem.split("-", 2)[2]
    curve = re.fullmatch(r"(.+)_curve(\d+)", variant)
    if curve:  # a learning-curve run: its variant's config with another budget, nothing else
        base = config.load(CONFIGS / f"smollm2-{dataset}-{curve[1]}.json").identity()
        assert mine["train"]["max_steps"] == int(curve[2])
        assert config.load(path).train.snapshot_every
        mine["train"]["max_steps"] = base["train"]["max_steps"]
        assert {k: v for k, v in mine.items() if k != "variant"} == {
            k: v for k, v in base.items() if k != "variant"}
        return
    differ = {k for k in base if k not in ("variant", "train") and base[k] != mine[k]}
    differ |= {f"train.{k}" for k in base["train"].keys() | mine["train"].keys()
               if base["train"].get(k) != mine["train"].get(k)}
    allowed = {"format", "sids", "train.fmt", "train.embeddings", "train.seed"}
    if mine["train"].get("align"):  # issue 24: gcrs plus alignment instances, nothing else
        allowed = {"train.align"}
        assert mine["train"]["align"]["ratio"] > 0
    assert differ <= allowed, differ


def test_variant_differs_from_gcrs_only_where_declared(make_configs):
    base = json.loads((CONFIGS / "cpu-inspired-gcrs.json").read_text())
    cfg = make_configs.variant_config(base, "sid3x64")
    assert cfg["sids"]["levels"] == 3 and cfg["variant"] == "sid3x64"
    assert {k: v for k, v in cfg.items() if k not in ("sids", "variant")} == \
        {k: v for k, v in base.items() if k not in ("sids", "variant")}
