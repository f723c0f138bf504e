"""Typed configs (crslib.config): every shipped file resolves, bad files fail naming the file and
the key, every default lives in one place, and the hash is taken from the resolved object."""
import dataclasses
import json

import pytest

from crslib import config
from crslib.training import run
from crslib.config import ConfigError, RunConfig

FILES = sorted(run.CONFIGS.glob("*.json"))
BASE = json.loads(run.config_path("cpu", "redial").read_text())


def _write(tmp_path, cfg, name="cpu-redial-x.json"):
    path = tmp_path / name
    path.write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_config_file_resolves_and_round_trips(path):
    rc = config.load(path)
    assert isinstance(rc, RunConfig) and rc.train.fmt == rc.format
    assert RunConfig.from_dict(rc.to_dict()) == rc
    assert config.config_hash(rc.to_dict()) == config.config_hash(rc)


def test_the_hash_is_pinned_and_taken_from_the_resolved_object():
    assert config.config_hash(BASE) == "4155f3ff99d6"  # cpu-redial-gcrs, as the shipped run
    explicit = {**BASE, "template": "plain", "eval": {**BASE["eval"], "decoding_limit": 60}}
    assert config.config_hash(explicit) == config.config_hash(BASE)  # defaults spelled out
    assert config.config_hash({**BASE, "_note": "a comment"}) == config.config_hash(BASE)
    runtime = {**BASE, "train": {**BASE["train"], "threads": 2, "time_limit_minutes": 5}}
    assert config.config_hash(runtime) == config.config_hash(BASE)  # how, not what, it trains
    other = {**BASE, "train": {**BASE["train"], "lr": 1e-3}}
    assert config.config_hash(other) != config.config_hash(BASE)
    assert config.config_hash({**BASE, "format": "resp"}) != config.config_hash(BASE)


def test_errors_name_the_file_and_the_key(tmp_path):
    cases = [
        ({**BASE, "trian": {}}, r"x\.json: unknown key 'trian'"),
        ({**BASE, "train": {**BASE["train"], "lrr": 1}}, r"x\.json: unknown key 'train\.lrr'"),
        ({**BASE, "train": {**BASE["train"], "lr": "2e-4"}},
         r"x\.json: train\.lr must be a number, not '2e-4'"),
        ({**BASE, "train": {**BASE["train"], "max_steps": 2.5}},
         r"x\.json: train\.max_steps must be an integer or null, not 2\.5"),
        ({**BASE, "sids": {**BASE["sids"], "levels": True}},
         r"x\.json: sids\.levels must be an integer, not True"),
        ({k: v for k, v in BASE.items() if k != "format"}, r"x\.json: missing key 'format'"),
        ({**BASE, "format": "gcsr"}, r"x\.json: format must be one of"),
        ({**BASE, "train": {**BASE["train"], "embeddings": "some"}},
         r"x\.json: train\.embeddings must be one of \['new', 'all'\]"),
        ({**BASE, "train": {**BASE["train"], "fmt": "sid"}}, r"x\.json: train\.fmt is not"),
        ({**BASE, "model": {"kind": "hf"}}, r"x\.json: model\.name is required"),
        ({**BASE, "model": {"kind": "hf", "name": "tiny", "lora": {"rank": 8}}},
         r"x\.json: unknown key 'model\.lora\.rank'"),
        ({**BASE, "train_splits": "train"}, r"x\.json: train_splits must be a list"),
    ]
    for cfg, message in cases:
        with pytest.raises(ConfigError, match=message):
            config.load(_write(tmp_path, cfg))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json: not valid JSON"):
        config.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match=r"x\.json: unknown key 'trian'"):  # via run too
        run.load_config(_write(tmp_path, {**BASE, "trian": {}}))


def test_every_default_lives_in_one_place():
    rc = RunConfig.from_dict({"profile": "p", "dataset": "redial", "variant": "v",
                              "format": "gcrs"})
    assert rc.eval == config.EvalConfig() and rc.eval.max_context_tokens == 768
    assert (rc.eval.num_beams, rc.eval.batch_size) == (50, 16)
    assert rc.train == dataclasses.replace(config.TrainConfig(), fmt="gcrs")
    assert rc.splits == ("train",) and rc.ranker == "generative" and rc.model.kind == "compact"
    assert RunConfig.from_dict({"profile": "p", "dataset": "inspired", "variant": "v",
                                "format": "sid"}).splits == ("train", "dev")
    ev = config.EvalConfig(limit=10, community_limit=5)
    assert [ev.protocol_limit(p) for p in ("paper", "community", "dedup")] == [10, 5, 5]


def test_a_variant_is_data_any_backbone_config_loads(tmp_path):
    cfg = {**BASE, "variant": "backbone_my_model",
           "model": {"kind": "hf", "name": "my-org/my-model",
                     "lora": {"r": 8, "alpha": 16, "dropout": 0.0}}}
    loaded = run.load_config(_write(tmp_path, cfg, "cpu-redial-backbone_my_model.json"))
    rc = config.resolve(loaded)
    assert (rc.variant, rc.model.name, rc.model.lora.r, rc.format) == (
        "backbone_my_model", "my-org/my-model", 8, "gcrs")
    decoupled = config.load(run.config_path("cpu", "redial", "decoupled"))
    assert (decoupled.ranker, decoupled.format) == ("item_head", "gcrs")
