"""Build a notebook from a plain .py file with ``# %%`` cell markers (jupytext 'percent' style).

The first cell is tagged ``parameters`` (papermill). A cell whose first line is
``# NBVAL_CHECK_OUTPUT`` keeps that marker so nbval compares its output.
Usage: python tools/make_notebook.py notebooks/src/00_data.py notebooks/00_data.ipynb
"""
import sys

import nbformat


def build(src: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    chunks = [c.strip("\n") for c in open(src).read().split("# %%")]
    for k, chunk in enumerate(c for c in chunks if c.strip()):
        if chunk.startswith(" [markdown]"):
            body = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#")
                             for line in chunk.split("\n")[1:])
            nb.cells.append(nbformat.v4.new_markdown_cell(body.strip()))
            continue
        cell = nbformat.v4.new_code_cell(chunk.strip())
        if not any(c.cell_type == "code" for c in nb.cells):
            cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    return nb


if __name__ == "__main__":
    nbformat.write(build(sys.argv[1]), sys.argv[2])
