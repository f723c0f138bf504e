"""Render ``results/bench.json`` as a Markdown table into README.md (never typed by hand).

    python benchmarks/readme_table.py [results/bench.json] [README.md]

Replaces the block between ``<!-- bench:start -->`` and ``<!-- bench:end -->``; when the markers
are absent, appends a ``## Benchmarks`` section with them at the end of the README.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
SECTION = ("## Benchmarks\n\n`make bench` runs `benchmarks/run_all.py` (SID building, constrained "
           "vs unconstrained decoding, exact scoring, training throughput; each benchmark in its "
           "own process, ratios measured within one run) and writes `results/bench.json`; the "
           "table below is generated from it by `benchmarks/readme_table.py`.\n\n")


def number(v) -> str:
    """3 significant digits, thousands separated from 1,000 on."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "-" if v is None else str(v)
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(bench: dict) -> str:
    """The Markdown block: one line on the machine, then name | what | value | ratio | goal."""
    m = bench.get("machine", {})
    quick = " — **quick mode: toy sizes, numbers not comparable**" if bench.get("quick") else ""
    dates = sorted({b.get("date", "?")[:10] for b in bench.get("benchmarks", {}).values()
                    if isinstance(b, dict) and b.get("date")})
    when = (f" (rows measured on {', '.join(dates)}: each benchmark's date and command "
            "are in results/bench.json)" if len(dates) > 1 else "")
    head = (f"Last run {m.get('date', '?')}{when} on {m.get('cpu_count', '?')} CPUs "
            f"({m.get('platform', '?')}), torch {m.get('torch', '?')}, {m.get('threads', '?')} "
            f"thread(s) per benchmark, load average {m.get('loadavg_start', '?')} at the start, "
            f"{number(m.get('wall_s'))} s in all, commit {m.get('commit', '?')}"
            f"{quick}.\n\n")
    lines = ["| name | what | value | ratio | goal |", "|---|---|---|---|---|"]
    for r in bench.get("rows", []):
        value = "-" if r.get("value") is None else f"{number(r['value'])} {r.get('unit') or ''}"
        ratio = "-" if r.get("ratio") is None else f"{number(r['ratio'])}x {r.get('vs') or ''}"
        goal = r.get("goal") or "-"
        if r.get("met") is not None:
            goal += " (met)" if r["met"] else " (**not met**)"
        lines.append("| " + " | ".join(cell(c.strip()) for c in
                                        (r["name"], r["what"], value, ratio, goal)) + " |")
    return head + "\n".join(lines) + "\n"


def replace_block(readme: str, block: str) -> str:
    """``readme`` with the text between the markers replaced by ``block`` (markers kept); the
    section with its markers is appended at the end when absent."""
    if START not in readme or END not in readme:
        return readme.rstrip("\n") + "\n\n" + SECTION + START + "\n" + block + END + "\n"
    before, rest = readme.split(START, 1)
    _, after = rest.split(END, 1)
    return before + START + "\n" + block + END + after


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    bench_path = Path(argv[0]) if argv else REPO / "results" / "bench.json"
    readme_path = Path(argv[1]) if len(argv) > 1 else REPO / "README.md"
    bench = json.loads(bench_path.read_text())
    readme_path.write_text(replace_block(readme_path.read_text(), render(bench)))
    print(f"{readme_path}: benchmark table from {bench_path} ({len(bench.get('rows', []))} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
