"""Result files: every reported number is written here by code, as JSON (and Markdown tables).

Writes are atomic (temp file + rename), so an interrupted run never leaves half a file.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

from crslib.paths import FIGURES, PAPER_RESULTS, REPO, RESULTS  # noqa: F401  (re-exported)


@contextlib.contextmanager
def atomic(path: str | os.PathLike) -> Iterator[Path]:
    """Write the file ``path`` atomically: the block writes the yielded temporary sibling (a
    unique name, so two processes never share it), which replaces ``path`` only when the block
    ends without an error; otherwise it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(obj, path: str | os.PathLike) -> Path:
    with atomic(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=False, default=str) + "\n")
    return Path(path)


def percent_ci(value: float, ci) -> str:
    """``value`` and its interval ``ci`` (fractions) in percent: ``"12.34 [10.00, 15.00]"``."""
    return "{:.2f} [{:.2f}, {:.2f}]".format(100 * value, *(100 * x for x in ci))


def emit_json(obj, out: str | os.PathLike | None = None) -> None:
    """Print ``obj`` as JSON on standard output (a benchmark's one object) and, with ``out``,
    also write it there (:func:`write_json`)."""
    import sys
    json.dump(obj, sys.stdout, indent=1, default=str)
    sys.stdout.write("\n")
    if out:
        write_json(obj, out)


def write_text(text: str, path: str | os.PathLike) -> Path:
    with atomic(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def markdown_table(rows: list[dict], columns: list[str] | None = None, floatfmt: str = ".4g") -> str:
    """A GitHub Markdown table from a list of dicts (missing values shown as '-')."""
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))

    def fmt(v) -> str:
        if v is None:
            return "-"
        return format(v, floatfmt) if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def save_table(rows: list[dict], name: str, profile: str, meta: dict | None = None,
               columns: list[str] | None = None) -> Path:
    """``results/<profile>/<name>.json`` (rows + meta) and ``<name>.md``; returns the JSON path."""
    base = RESULTS / profile / name
    write_text(markdown_table(rows, columns), base.with_suffix(".md"))
    return write_json({"profile": profile, **(meta or {}), "rows": rows}, base.with_suffix(".json"))


def paper_results() -> dict:
    """The paper's reported numbers (Tables 1-4, dataset sizes), read from one data file."""
    return json.loads(PAPER_RESULTS.read_text())


def shown(path) -> str:
    """``path`` relative to the repository when inside it (as messages and tables show it)."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)
