"""Write the README's headline table from ``results/<profile>/`` (never typed by hand).

Usage: python tools/readme_results.py [--profile cpu]
Replaces the blocks between ``<!-- headline:start -->`` / ``<!-- headline:end -->`` and
``<!-- claims:start -->`` / ``<!-- claims:end -->``, ``<!-- table6:start -->`` /
``<!-- table6:end -->`` (notebook 06's Table 6 in miniature) and ``<!-- runs:start -->`` /
``<!-- runs:end -->`` (the run inventory of notebook 09).
"""
import argparse
from pathlib import Path

from crslib import claims, experiments

README = Path(__file__).resolve().parent.parent / "README.md"

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--profile", default="cpu")
    args = p.parse_args()
    text = experiments.replace_block(README.read_text(),
                                     experiments.headline_markdown(args.profile), "headline")
    text = experiments.replace_block(text, claims.markdown(args.profile), "claims")
    text = experiments.replace_block(text, experiments.table6_markdown(args.profile), "table6")
    text = experiments.replace_block(text, experiments.runs_markdown(args.profile), "runs")
    README.write_text(text)
