"""A chat opened from a run takes the settings chosen on validation for those very weights
(crslib.chat.settings), and nothing chosen for other weights. Skipped without the committed
ReDial chat run or its validation results."""
import json
import shutil

import pytest

from crslib import report
from crslib.chat import settings
from crslib.decoding.generation import ResponseDecoding

RUN = report.REPO / "runs" / "cpu" / "redial" / "backbone_smollm2_135m"
SAVED = report.REPO / "results" / "cpu" / "redial"
CHOICES = ("decoding", "intent", "chat_beam")


@pytest.fixture
def results(tmp_path, monkeypatch):
    files = [SAVED / f"{RUN.name}.{p}.json" for p in CHOICES]
    if not (RUN / "train_summary.json").is_file() or not all(f.is_file() for f in files):
        pytest.skip(f"{RUN} or its validation choices are not here")
    folder = tmp_path / "cpu" / "redial"
    folder.mkdir(parents=True)
    for f in files:
        shutil.copy(f, folder / f.name)
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    return {p: folder / f"{RUN.name}.{p}.json" for p in CHOICES}


def read(path):
    return json.loads(path.read_text())


def test_the_choices_made_for_these_weights_are_read(results):
    got = settings.validated_settings(RUN)
    assert got == {"decoding": ResponseDecoding(**read(results["decoding"])["chosen_setting"]),
                   "intent_cut": read(results["intent"])["cut"],
                   "num_beams": read(results["chat_beam"])["chosen"]}


def test_a_choice_made_by_other_weights_or_missing_is_left_out(results):
    other = {**read(results["decoding"]), "model_hash": "0" * 16}
    results["decoding"].write_text(json.dumps(other))
    results["chat_beam"].unlink()
    assert set(settings.validated_settings(RUN)) == {"intent_cut"}
