"""Each notebook and its plain-text twin (jupytext pairing, notebooks/jupytext.toml) agree, and
the committed notebooks hold no outputs and no injected cells (executed copies live in
notebooks/executed/<profile>/)."""
from pathlib import Path

import jupytext
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PAIRS = sorted(NOTEBOOKS.glob("[0-9]*.ipynb"))


def cells(nb) -> list[tuple]:
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", []))) for c in nb.cells]


def test_every_notebook_has_its_twin_and_no_other_source_exists():
    assert PAIRS, "no notebooks found"
    assert {p.stem for p in PAIRS} == {p.stem for p in (NOTEBOOKS / "src").glob("*.py")}


@pytest.mark.parametrize("path", PAIRS, ids=lambda p: p.stem)
def test_pair_agrees_and_notebook_is_clean(path):
    nb = nbformat.read(path, as_version=4)
    twin = jupytext.read(NOTEBOOKS / "src" / f"{path.stem}.py")
    assert cells(nb) == cells(twin), f"{path.name} and src/{path.stem}.py differ: run make notebooks"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), (
        f"{path.name} holds outputs: executed copies belong in notebooks/executed/<profile>/")
    tags = [set(c.metadata.get("tags", [])) for c in code]
    assert "parameters" in tags[0] and sum("parameters" in t for t in tags) == 1
    assert not any("injected-parameters" in t for t in tags), f"{path.name}: papermill cell"
    assert "profile = " in code[0].source  # the switch every notebook has
