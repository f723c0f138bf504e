"""Write the variant configs (ablations, tiger) from each profile's ``gcrs`` config.

Every variant differs from ``<profile>-<dataset>-gcrs.json`` only in the keys below, so the
comparison is the paper's (NOTES.md §7, Table 4). Re-run after editing a ``gcrs`` config:
    python tools/make_configs.py
"""
import copy
import json
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent.parent / "crslib" / "configs"
VARIANTS = {
    "resp": {},                                   # format decides (crslib.run.VARIANT_FORMATS)
    "mode_resp": {},
    "sid": {},
    "all_embeddings": {"train": {"embeddings": "all"}},
    "sid3x64": {"sids": {"levels": 3, "codebook_size": 64}},
    "sid5x64": {"sids": {"levels": 5, "codebook_size": 64}},
    "sid4x32": {"sids": {"levels": 4, "codebook_size": 32}},
    "sid4x128": {"sids": {"levels": 4, "codebook_size": 128}},
    "tiger": {},
}


def variant_config(base: dict, variant: str) -> dict:
    cfg = copy.deepcopy(base)
    cfg["variant"] = variant
    for block, values in VARIANTS[variant].items():
        cfg[block] = {**cfg[block], **values}
    return cfg


if __name__ == "__main__":
    for base_path in sorted(CONFIGS.glob("*-gcrs.json")):
        base = json.loads(base_path.read_text())
        for variant in VARIANTS:
            path = CONFIGS / base_path.name.replace("-gcrs.json", f"-{variant}.json")
            path.write_text(json.dumps(variant_config(base, variant), indent=1) + "\n")
            print(path.name)
