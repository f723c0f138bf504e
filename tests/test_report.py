import json
import re
from pathlib import Path

import pytest

from crslib import report


def test_markdown_table_and_atomic_json(tmp_path):
    md = report.markdown_table([{"a": 1, "b": 0.123456}, {"a": 2}], floatfmt=".3f")
    assert md == "| a | b |\n|---|---|\n| 1 | 0.123 |\n| 2 | - |\n"
    p = report.write_json({"x": 1}, tmp_path / "d" / "r.json")
    assert json.loads(p.read_text()) == {"x": 1} and not list(tmp_path.rglob("*.tmp"))


def test_paper_results_match_the_notes():
    """Every row of Tables 1-2 in paper_results.json equals the row in NOTES.md."""
    notes = Path(__file__).resolve().parents[2] / "shared" / "paper" / "NOTES.md"
    if not notes.is_file():
        pytest.skip("shared/paper/NOTES.md not found")
    text = notes.read_text()
    paper = report.paper_results()
    for table, heading in (("table1_redial", "Table 1"), ("table2_inspired", "Table 2")):
        block = text[text.index(heading):].split("\n\n")[0]
        for model, vals in paper[table].items():
            row = re.search(rf"^\| (?:\*\*)?{re.escape(model)}(?:\*\*)? \|(.*)\|$", block, re.M)
            assert row, (table, model)
            nums = [float(x) for x in row.group(1).split("|")]
            assert nums == list(vals.values()), (table, model)
