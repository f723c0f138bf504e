"""The scripted six-turn conversation (chat.SCRIPT) with the best committed `cpu` run: titles
typed as text, requests for recommendations; no reply loops (a repeated word 3-gram), none has
a run of more than 4 digits, and every recommendation turn names an item the user did not."""
import pytest

from crslib import chat, experiments
from crslib.generation import ResponseDecoding


def test_scripted_conversation_with_the_best_committed_run(shared_data):
    try:
        best = experiments.best_chat_run("cpu")
    except FileNotFoundError:
        pytest.skip("no committed cpu run with a dialog result")
    folder = experiments.RUNS.parent / best["run"]
    decoding = experiments.chat_decoding("cpu", best["dataset"], best["variant"], shared_data)
    session = chat.ChatSession.from_run(folder, shared_data,
                                        decoding=ResponseDecoding(**decoding["chosen_setting"]))
    rows = chat.run_script(session, chat.SCRIPT[best["dataset"]])
    assert len(rows) == 6
    for r in rows:
        assert not r["repeats_3gram"], r
        assert r["longest_digit_run"] <= 4, r
        if r["intent"] == "rec":
            assert r["recommended"], r
    assert sum(r["intent"] == "rec" for r in rows) >= 3  # it recommends when asked
