"""The chat settings chosen on validation turns for a run, read back from their result files:
the response decoding (:func:`crslib.studies.chat_choice.chat_decoding`), the free-mode intent
cut (:func:`crslib.studies.freemode.intent_cut`) and the beam width
(:func:`crslib.studies.chat_choice.chat_beam`). A choice is used only by the weights that made
it: its file's ``config_hash`` and ``model_hash`` must be the run's."""
from __future__ import annotations

import json
import os

from crslib.decoding.generation import ResponseDecoding
from crslib.evaluation import result_files
from crslib.training import run

CHOICES = {  # result file protocol -> (ChatSession keyword, the value in the file)
    "decoding": ("decoding", lambda r: ResponseDecoding(**r["chosen_setting"])),
    "intent": ("intent_cut", lambda r: float(r["cut"])),
    "chat_beam": ("num_beams", lambda r: int(r["chosen"])),
}


def validated_settings(path: str | os.PathLike) -> dict:
    """``ChatSession`` keyword arguments chosen on validation for the run folder ``path``; a
    choice whose file is missing, or was made by other weights, is left out."""
    rc = run.saved_config(path)
    who = result_files.identity(rc, path)
    out = {}
    for protocol, (key, read) in CHOICES.items():
        file = result_files.result_path(rc.profile, rc.dataset, rc.variant, protocol)
        if file.is_file():
            saved = json.loads(file.read_text())
            if all(saved.get(k) == v for k, v in who.items()):
                out[key] = read(saved)
    return out
