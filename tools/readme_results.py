"""Write the README's result blocks from ``results/`` (never typed by hand).

Usage: python tools/readme_results.py

Replaces the blocks between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``:
``headline`` (the paper protocol: the pretrained ``smollm2`` profile first, then the compact
``cpu`` models, then the paper's rows), ``claims-smollm2`` and ``claims`` (the paired claims of
``results/<profile>/claims.json``), ``curve`` (the INSPIRED budget chosen on ``dev``),
``align`` (the alignment ratio chosen on ``dev``), ``redial-curves`` (ReDial's GCRS and
alignment learning curves on ``valid``, paired step by step), ``id-knowledge`` (what each
alignment run knows of its SIDs, beside ``gcrs``), ``table6`` (notebook 06's Table 6 in
miniature) and ``runs`` (the ``cpu`` run inventory).
"""
from pathlib import Path

from crslib import report
from crslib.studies import (align_choice, claims, curve, id_knowledge, result_tables,
                            run_inventory)

README = Path(__file__).resolve().parent.parent / "README.md"
RANKERS = {"smollm2": ("gcrs", "tiger", "text-retrieval", "popularity", "repeat"),
           "cpu": ("gcrs", "tiger", "decoupled")}


def curve_markdown(profile: str = "smollm2", dataset: str = "inspired") -> str:
    c = curve.load(profile, dataset)
    if c is None:
        return "(not scored yet: `crslib.studies.curve.learning_curve`)\n"
    rows = [{"step": r["step"], "epochs": r["epochs"], "cases": r["cases"],
             **{k: round(100 * r[k], 2) for k in ("recall@1", "recall@10", "ndcg@10")},
             f"{curve.NEW} (cases)": (f"{report.percent_ci(r[curve.NEW], r[f'{curve.NEW} 95% CI'])}"
                                      f" ({r['new_item_cases']})"),
             "chosen": "yes" if r["step"] == c["chosen_steps"] else ""} for r in c["rows"]]
    note = ("" if c.get("finished") else
            "\n(the curve run is still training: points are added as its snapshots are saved)\n")
    return report.markdown_table(rows) + note


def align_markdown(profile: str = "smollm2") -> str:
    return "\n".join(f"{claims.NAMES[ds]}:\n\n" + align_choice.markdown(profile, ds)
                     for ds in ("inspired", "redial"))


def id_knowledge_markdown(profile: str = "smollm2") -> str:
    parts = []
    for ds in ("inspired", "redial"):
        variants = ["gcrs", *align_choice.candidates(profile, ds)]
        parts.append(f"{claims.NAMES[ds]}:\n\n" + id_knowledge.markdown(profile, ds, variants))
    return "\n".join(parts)


if __name__ == "__main__":
    text = README.read_text()
    text = result_tables.replace_block(
        text, result_tables.headline_markdown(["smollm2", "cpu"], rankers=RANKERS), "headline")
    text = result_tables.replace_block(text, claims.markdown("smollm2"), "claims-smollm2")
    text = result_tables.replace_block(text, claims.markdown("cpu"), "claims")
    text = result_tables.replace_block(text, curve_markdown(), "curve")
    text = result_tables.replace_block(text, align_markdown(), "align")
    text = result_tables.replace_block(text, curve.compare_markdown(
        "smollm2", "redial", *curve.COMPARED["smollm2", "redial"]), "redial-curves")
    text = result_tables.replace_block(text, id_knowledge_markdown(), "id-knowledge")
    text = result_tables.replace_block(text, result_tables.table6_markdown("cpu"), "table6")
    text = result_tables.replace_block(text, run_inventory.runs_markdown("cpu"), "runs")
    README.write_text(text)
