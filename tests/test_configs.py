"""The variant configs are generated from each profile's ``gcrs`` config (tools/make_configs.py);
a ``gcrs`` config edited without re-running the generator would leave the variants stale."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "crslib" / "configs"


@pytest.fixture(scope="module")
def make_configs():
    spec = importlib.util.spec_from_file_location("make_configs", ROOT / "tools" / "make_configs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


VARIANT_FILES = sorted(p for p in CONFIGS.glob("*.json") if not p.name.endswith("-gcrs.json"))


@pytest.mark.parametrize("path", VARIANT_FILES, ids=lambda p: p.stem)
def test_variant_config_matches_its_generator(path, make_configs):
    profile, dataset, variant = path.stem.split("-", 2)
    base = json.loads((CONFIGS / f"{profile}-{dataset}-gcrs.json").read_text())
    assert json.loads(path.read_text()) == make_configs.variant_config(base, variant), (
        f"{path.name} is stale: run `python tools/make_configs.py`")


def test_variant_differs_from_gcrs_only_where_declared(make_configs):
    base = json.loads((CONFIGS / "cpu-inspired-gcrs.json").read_text())
    cfg = make_configs.variant_config(base, "sid3x64")
    assert cfg["sids"]["levels"] == 3 and cfg["variant"] == "sid3x64"
    assert {k: v for k, v in cfg.items() if k not in ("sids", "variant")} == \
        {k: v for k, v in base.items() if k not in ("sids", "variant")}
