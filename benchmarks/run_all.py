"""Run every benchmark once, each in its own process, and collect ``results/bench.json``.

    python benchmarks/run_all.py [--quick] [--only decode_tiny train] [--out results/bench.json]

Each benchmark script writes its own JSON part (``--out``); this driver splits every part into
``config`` (what was run), ``values`` (what was measured) and ``ratios`` (measured in the same
run, so machine load cancels out as far as it can), adds the machine (CPU count, torch, threads,
date, load average) and the summary ``rows`` that ``readme_table.py`` renders. ``--only`` reruns
some benchmarks and keeps the others from the existing file when it was measured on the same
kind of machine. Sizes are modest (2-core CPU: a few minutes in all); ``--quick`` passes
``--quick`` to every script (tiny sizes, a check that everything runs, numbers not comparable).

Goals: SID building limits are the issue's ("Semantic IDs": RQ-VAE < 60 s, RQ-KMeans < 15 s on
ReDial, 2-core CPU); the others are this repository's targets: the trie constraint costs at most
1.5x the unconstrained beam, exact scoring of every item at most 2x the constrained beam, the
evaluation beam (``sid_beam_search``) is faster than ``generate``'s, the training loop runs at
>= 0.9x a bare forward/backward/step, and every constrained output is an item.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CPU_RUN = "runs/cpu/redial/gcrs"

# name -> script, arguments (full, quick), the report keys that are measurements and ratios
BENCHMARKS: dict[str, dict] = {
    "ids": {"script": "bench_ids.py", "args": ["--skip-cold"], "threads": False,  # OMP_NUM_THREADS
            "values": ["catalog_load_s", "encode_warm_s", "encode_cold_s", "rqvae_s", "rqkmeans_s",
                       "rqvae", "rqkmeans", "within_limits"],
            "ratios": {"rqvae_over_rqkmeans": "ratios.rqvae_over_rqkmeans"}},
    "decode_tiny": {"script": "bench_decode.py", "args": ["--backbone", "tiny", "--prompts", "32"],
                    "values": ["constrained_ms", "unconstrained_ms", "exact_ms", "sid_beam_ms",
                               "valid_share", "distinct_share", "unconstrained_invalid_share",
                               "prompt_tokens_mean"],
                    "ratios": {"constrained_over_unconstrained": "ratio",
                               "exact_over_constrained": "exact_ratio",
                               "sid_beam_over_constrained": "sid_beam_ratio"}},
    "decode_cpu": {"script": "bench_decode.py", "args": ["--run", CPU_RUN, "--prompts", "32"],
                   "requires": f"{CPU_RUN}/config.json",
                   "values": ["constrained_ms", "unconstrained_ms", "exact_ms", "sid_beam_ms",
                              "valid_share", "distinct_share", "unconstrained_invalid_share",
                              "prompt_tokens_mean"],
                   "ratios": {"constrained_over_unconstrained": "ratio",
                              "exact_over_constrained": "exact_ratio",
                              "sid_beam_over_constrained": "sid_beam_ratio"}},
    "train": {"script": "bench_train.py", "args": ["--dialogs", "150", "--steps", "16"],
              "values": ["loop_tokens_per_s", "bare_tokens_per_s", "loop_tokens", "bare_tokens"],
              "ratios": {"loop_over_bare": "ratio"}},
    "train_smollm2": {"script": "bench_train.py",
                      "args": ["--config", "crslib/configs/cpu-redial-backbone_smollm2_135m.json",
                               "--dialogs", "40", "--steps", "4"],
                      "values": ["loop_tokens_per_s", "bare_tokens_per_s", "loop_tokens",
                                 "bare_tokens", "peak_rss_mb"],
                      "ratios": {"loop_over_bare": "ratio"}},
    "score_smollm2": {"script": "bench_score.py",
                      "args": ["--run", "runs/smollm2/redial/gcrs", "--dialogs", "12"],
                      "requires": "runs/smollm2/redial/gcrs/config.json",
                      "values": ["s_per_case", "old_s_per_case", "cases", "distinct_prompts",
                                 "same_gold_rank_share", "same_top50_share"],
                      "ratios": {"old_over_new": "speedup"}},
    "chat_reply": {"script": "bench_chat.py", "args": ["--rounds", "2"],
                   "requires": "runs/cpu/redial/backbone_smollm2_135m/config.json",
                   "values": ["new_p50_s_1t", "new_p95_s_1t", "new_p50_s_2t", "new_p95_s_2t",
                              "old_p50_s_1t", "old_p95_s_1t", "old_p50_s_2t", "old_p95_s_2t",
                              "one_draw_p50_s_2t", "one_draw_p95_s_2t", "chat_num_beams",
                              "turns"],
                   "ratios": {"old_over_new_p95_2t": "p95_old_over_new_2t",
                              "old_over_new_p95_1t": "p95_old_over_new_1t",
                              "one_draw_over_new_p95_2t": "p95_one_draw_over_new_2t"}},
}

# README rows: benchmark, name, what (formatted with the part's config and values), the value
# shown and its unit, the ratio shown and what it is relative to, the goal (key, op, bound, text)
_DECODE = "{prompts} {dataset} test prompts ({prompt_tokens_mean:.0f} tokens mean), {items} items"
ROWS: list[dict] = [
    {"bench": "ids", "name": "SIDs: RQ-VAE",
     "what": "build from cached embeddings (fit, codes, collision re-assignment), {items} "
             "{dataset} items", "value": "rqvae_s", "unit": "s",
     "ratio": "rqvae_over_rqkmeans", "vs": "RQ-KMeans",
     "goal": ["rqvae_s", "<", 60, "< 60 s (issue)"]},
    {"bench": "ids", "name": "SIDs: RQ-KMeans", "what": "the same with residual k-means",
     "value": "rqkmeans_s", "unit": "s", "goal": ["rqkmeans_s", "<", 15, "< 15 s (issue)"]},
]
for _b, _model in (("decode_tiny", "tiny random Llama, random 4x64 SIDs"),
                   ("decode_cpu", f"trained compact `cpu` model ({CPU_RUN})")):
    ROWS += [
        {"bench": _b, "name": f"{_b}: constrained beam",
         "what": "top-50 beam through `generate` + trie processor, per prompt; " + _model + "; "
                 + _DECODE, "value": "constrained_ms", "unit": "ms",
         "ratio": "constrained_over_unconstrained", "vs": "unconstrained beam",
         "goal": ["constrained_over_unconstrained", "<=", 1.5, "<= 1.5x unconstrained"]},
        {"bench": _b, "name": f"{_b}: exact scoring",
         "what": "`score_all_items`: every item's exact SID log-prob, per prompt",
         "value": "exact_ms", "unit": "ms", "ratio": "exact_over_constrained",
         "vs": "constrained beam", "goal": ["exact_over_constrained", "<=", 2, "<= 2x beam"]},
        {"bench": _b, "name": f"{_b}: evaluation beam",
         "what": "`sid_beam_search` (cache-sharing constrained beam, top-50), per prompt",
         "value": "sid_beam_ms", "unit": "ms", "ratio": "sid_beam_over_constrained",
         "vs": "`generate` beam", "goal": ["sid_beam_over_constrained", "<", 1, "< 1x `generate`"]},
        {"bench": _b, "name": f"{_b}: validity",
         "what": "share of constrained top-50 outputs that are catalog items (unconstrained: "
                 "{unconstrained_invalid_share:.2f} invalid)",
         "value": "valid_share", "unit": "", "goal": ["valid_share", "==", 1, "= 1"]},
    ]
ROWS.append(
    {"bench": "train", "name": "training loop",
     "what": "unpadded tokens/s of `train.train`, {steps} steps, {dialogs} ReDial dialogs, "
             "`{config}`", "value": "loop_tokens_per_s", "unit": "tok/s",
     "ratio": "loop_over_bare", "vs": "bare forward/backward/step",
     "goal": ["loop_over_bare", ">=", 0.9, ">= 0.9x bare"]})

ROWS.append(
    {"bench": "train_smollm2", "name": "training loop, SmolLM2-135M",
     "what": "unpadded tokens/s of `train.train` with peft LoRA r16 on all linear layers, new "
             "rows, restricted head, {batch_tokens}-token steps in {micro_batch_tokens}-token "
             "micro-batches, {steps} steps, {dialogs} ReDial dialogs, `{config}`; peak RSS "
             "{peak_rss_mb} MB", "value": "loop_tokens_per_s", "unit": "tok/s",
     "ratio": "loop_over_bare", "vs": "bare forward/backward/step",
     "goal": ["loop_over_bare", ">=", 0.9, ">= 0.9x bare"]})

ROWS.append(
    {"bench": "score_smollm2", "name": "paper-protocol scoring, SmolLM2-135M",
     "what": "seconds per ReDial test case of `sid_beam_search` (top-50, identical prompts once, "
             "shared prefixes once, rows without padding), every case of {dialogs} seeded test "
             "dialogs ({cases} cases, {distinct_prompts} distinct prompts), `{run}`; the same "
             "gold rank as the old per-case path for {same_gold_rank_share:.3f} of the cases",
     "value": "s_per_case", "unit": "s", "ratio": "old_over_new",
     "vs": "speed-up over the old per-case path",
     "goal": ["s_per_case", "<=", 1.0, "<= 1.0 s per case (issue 21)"]})

ROWS.append(
    {"bench": "chat_reply", "name": "chat reply, SmolLM2-135M",
     "what": "p95 seconds per reply at two threads over the scripted conversation ({turns} "
             "turns x {rounds} rounds), `{run}`: one encoding per turn from the kept KV cache, "
             "beam {chat_num_beams}, decoding {decoding} with {draws} draws (sample-and-rank; "
             "one draw: p95 {one_draw_p95_s_2t:.2f} s); p50 {new_p50_s_2t:.2f} s; one thread: "
             "p50 {new_p50_s_1t:.2f}, p95 {new_p95_s_1t:.2f} s", "value": "new_p95_s_2t",
     "unit": "s", "ratio": "old_over_new_p95_2t",
     "vs": "speed-up of p95 over the old path (3 encodings, beam 50, one draw)",
     "goal": ["new_p95_s_2t", "<=", 1.0, "p95 <= 1.0 s at 2 threads (issue 22)"]})

_OPS = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b,
        ">": lambda a, b: a > b, "==": lambda a, b: a == b}


def pick(report: dict, key: str):
    """``report[key]``, with dotted keys reaching into nested dicts; None when absent."""
    for part in key.split("."):
        if not isinstance(report, dict) or part not in report:
            return None
        report = report[part]
    return report


def split_part(name: str, report: dict, spec: dict | None = None) -> dict:
    """One benchmark's JSON -> ``{"config", "values", "ratios"}`` (absent keys are left out)."""
    spec = spec or BENCHMARKS[name]
    values = {k: report[k] for k in spec["values"] if k in report}
    ratios = {k: pick(report, path) for k, path in spec["ratios"].items()
              if pick(report, path) is not None}
    used = set(spec["values"]) | {p.split(".")[0] for p in spec["ratios"].values()}
    config = {k: v for k, v in report.items() if k not in used}
    return {"config": config, "values": values, "ratios": ratios}


def machine(threads: int) -> dict:
    import torch
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, text=True,
                                capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"cpu_count": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "threads": threads, "commit": commit,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()]}


def machine_kind(platform_name: str | None) -> str | None:
    """The platform without the sandbox's kernel build number (``-v657``): every session runs
    on a fresh host of the same kind, whose kernel build differs."""
    import re
    return None if platform_name is None else re.sub(r"-v\d+(?=-)", "", platform_name)


def same_machine(a: dict, b: dict) -> bool:
    keys = ("cpu_count", "torch", "threads")
    return all(a.get(k) == b.get(k) for k in keys) and \
        machine_kind(a.get("platform")) == machine_kind(b.get("platform"))


def rows(benchmarks: dict) -> list[dict]:
    """The summary rows of the benchmarks present: name, what, value, unit, ratio, vs, goal, met."""
    out = []
    for r in ROWS:
        b = benchmarks.get(r["bench"])
        if b is None:
            continue
        row = {"name": r["name"], "what": r["what"], "value": None, "unit": r["unit"],
               "ratio": None, "vs": r.get("vs"), "goal": r["goal"][3] if r.get("goal") else None,
               "met": None}
        if "values" not in b:  # skipped or failed
            row["what"] = b.get("skipped") or f"failed: {b.get('error', '?')[-200:]}"
            out.append(row)
            continue
        flat = {**b["config"], **b["values"], **b["ratios"]}
        try:
            row["what"] = r["what"].format(**flat)
        except (KeyError, ValueError, TypeError):
            pass
        row["value"] = flat.get(r["value"])
        row["ratio"] = flat.get(r["ratio"]) if r.get("ratio") else None
        if r.get("goal") and flat.get(r["goal"][0]) is not None:
            key, op, bound, _ = r["goal"]
            row["met"] = bool(_OPS[op](flat[key], bound))
        out.append(row)
    return out


def collect(parts: dict, mach: dict, quick: bool, old: dict | None = None) -> dict:
    """Merge freshly run ``parts`` (name -> entry) into ``old`` and rebuild the rows.

    An entry is ``{"script", "command", "seconds", "date", "config", "values", "ratios"}``, or
    ``{"skipped": why}`` / ``{"error": text}``. Old entries that were not rerun are kept when
    ``old`` was measured on the same machine (CPU count, torch, platform, threads) and in the
    same mode (quick or not); they keep their own ``date``.
    """
    benchmarks = {}
    if old and same_machine(old.get("machine", {}), mach) and old.get("quick") == quick:
        benchmarks.update(old.get("benchmarks", {}))
    benchmarks.update(parts)
    ordered = {k: benchmarks[k] for k in [*BENCHMARKS, *sorted(set(benchmarks) - set(BENCHMARKS))]
               if k in benchmarks}
    return {"machine": mach, "quick": quick, "benchmarks": ordered, "rows": rows(ordered)}


def run_part(name: str, spec: dict, out: Path, quick: bool, threads: int, timeout: float) -> dict:
    """Run one benchmark script in a fresh process; return its entry for :func:`collect`."""
    if spec.get("requires") and not (REPO / spec["requires"]).is_file():
        return {"skipped": f"skipped: {spec['requires']} not found (train that run first)"}
    args = [*spec["args"], *(["--threads", str(threads)] if spec.get("threads", True) else []),
            *(["--quick"] if quick else [])]
    cmd = [sys.executable, str(HERE / spec["script"]), *args, "--out", str(out)]
    out.unlink(missing_ok=True)  # never read a stale part
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, text=True, capture_output=True,
                              timeout=timeout)
        error = None if proc.returncode == 0 else proc.stderr[-2000:]
    except subprocess.TimeoutExpired:
        error = f"timed out after {timeout:.0f} s"
    seconds = round(time.perf_counter() - t, 1)
    entry = {"script": f"benchmarks/{spec['script']}",
             "command": ["python", f"benchmarks/{spec['script']}", *args],
             "seconds": seconds, "date": date}
    if error is not None or not out.is_file():
        return {**entry, "error": error or "no output written"}
    return {**entry, **split_part(name, json.loads(out.read_text()), spec)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(REPO / "results" / "bench.json"))
    ap.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=None)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks that all runs")
    ap.add_argument("--threads", type=int, default=1, help="torch/BLAS threads per benchmark")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per benchmark")
    ap.add_argument("--parts", default=None, help="keep each script's JSON in this folder")
    args = ap.parse_args(argv)
    from crslib.report import write_json

    out = Path(args.out)
    old = json.loads(out.read_text()) if out.is_file() else None
    mach = machine(args.threads)
    t0 = time.perf_counter()
    parts = {}
    with tempfile.TemporaryDirectory(prefix="bench_") as tmp:
        folder = Path(args.parts or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for name in args.only or BENCHMARKS:
            print(f"bench {name} ...", end=" ", flush=True, file=sys.stderr)
            parts[name] = run_part(name, BENCHMARKS[name], folder / f"{name}.json", args.quick,
                                   args.threads, args.timeout)
            state = ("skipped" if "skipped" in parts[name] else
                     "FAILED" if "error" in parts[name] else "ok")
            print(f"{state} ({parts[name].get('seconds', 0)} s)", file=sys.stderr)
    mach["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    mach["wall_s"] = round(time.perf_counter() - t0, 1)
    result = collect(parts, mach, args.quick, old)
    write_json(result, out)
    for r in result["rows"]:
        print(json.dumps(r), file=sys.stdout)
    print(f"wrote {out} ({mach['wall_s']} s)", file=sys.stderr)
    return 1 if any("error" in p for p in parts.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
