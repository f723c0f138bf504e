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


def test_paper_tables_5_6_agree_with_tables_1_2():
    """The default backbone/encoder row of Tables 5-6 is the GCRS row of Tables 1-2."""
    from crslib import report
    p = report.paper_results()
    for ds, t12, qwen in (("redial", "table1_redial", "Qwen2.5-7B"), ("inspired", "table2_inspired", "Qwen2.5")):
        row = p["table5_backbones"][ds][qwen]
        for k in ("recall@1", "recall@10", "ndcg@10", "mrr@10"):
            assert row[k] == p[t12]["GCRS"][k]
        assert len(p["table5_backbones"][ds]) == 5 and len(p["table6_encoders"][ds]) == 4


def test_atomic_write_replaces_only_on_success(tmp_path):
    from crslib import report
    path = tmp_path / "sub" / "a.json"
    report.write_json({"x": 1}, path)
    with pytest.raises(RuntimeError):
        with report.atomic(path) as tmp:
            tmp.write_text("half a fi")
            raise RuntimeError("crash while writing")
    assert json.loads(path.read_text()) == {"x": 1}  # untouched
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]  # no temporary file left
    with report.atomic(path) as tmp:
        assert tmp.parent == path.parent and tmp != path
        tmp.write_text("new")
    assert path.read_text() == "new" and oct(path.stat().st_mode & 0o777) == "0o644"
