"""The SID-knowledge check (crslib.studies.id_knowledge): the same seeded catalog cases for every
run, one item per paired unit, and the recommender's ranks of them through the one scoring path."""
import pytest

from crslib import report
from crslib.data import Catalog, Dataset, Dialog, Item, LoadReport, Turn
from crslib.evaluation import evaluate as ev_mod
from crslib.studies import experiments, id_knowledge
from crslib.studies.bench import random_sids

ITEMS = [str(100 + i) for i in range(12)]
CATALOG = Catalog([Item(iid, f"Film {k}", str(1980 + k), ("horror",) if k % 2 else (),
                        plot=f"A story about thing number {k}.") for k, iid in enumerate(ITEMS)])


def test_cases_are_a_seeded_catalog_sample_one_item_per_unit():
    sids = random_sids(ITEMS[:10], 3, 4, 0)  # two items have no SID: never asked
    cs = id_knowledge.cases(CATALOG, sids, limit=6)
    assert len(cs) == 6 and [ex.item for ex in cs] == sorted(ex.item for ex in cs)
    assert {ex.item for ex in cs} <= set(ITEMS[:10])
    assert cs == id_knowledge.cases(CATALOG, sids, limit=6)  # seeded
    assert cs[0].prompt == (f"User: Item: {CATALOG[cs[0].item].name} | "
                            f"{'horror | ' if int(cs[0].item) % 2 else ''}"
                            f"A story about thing number {int(cs[0].item) - 100}.\nAssistant:")
    assert [ex.dialog_id for ex in cs] == [f"item-{ex.item}" for ex in cs]
    assert all(ex.context_items == () and ex.mode == "rec" for ex in cs)
    assert len(id_knowledge.cases(CATALOG, sids, limit=None)) == 10


def test_trained_items_are_the_items_the_training_dialogs_mention():
    d = [Dialog("d1", (Turn("user", "I liked @101", ("101",)), Turn("assistant", "Try @102"))),
         Dialog("d2", (Turn("user", "hi", ("105",)),))]
    ds = Dataset("toy", CATALOG, {"train": d[:1], "dev": d[1:]}, LoadReport())
    assert id_knowledge.trained_items(ds, ("train",)) == {"101", "102"}
    assert id_knowledge.trained_items(ds, ("train", "dev")) == {"101", "102", "105"}


def test_check_ranks_the_cases_by_the_paper_protocol_and_is_reused(shared_data, tmp_path,
                                                                   monkeypatch):
    import torch
    from crslib.evaluation import recommenders
    monkeypatch.setattr(report, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(experiments, "RUNS", tmp_path / "runs")
    torch.set_num_threads(1)
    rec = recommenders.fit(experiments.config("smoke", "inspired"),
                           experiments.run_dir("smoke", "inspired", "gcrs"), shared_data)
    out = id_knowledge.check("smoke", "inspired", "gcrs", shared_data, limit=5)
    assert (out["split"], out["protocol"], out["n_cases"], out["limit"]) == (
        "catalog", "id_knowledge", 5, 5)
    ds = experiments.data.load("inspired", shared_data)
    cs = id_knowledge.cases(ds.catalog, rec.sids, limit=5)
    assert out["case_ranks"] == rec.ranks(cs, "paper")
    assert out["case_ids"] == ev_mod.case_ids(cs)
    assert sum(g["n_cases"] for g in out["by_training"].values() if g) == 5
    monkeypatch.setattr(ev_mod, "evaluate", lambda *a: pytest.fail("recomputed"))
    assert id_knowledge.check("smoke", "inspired", "gcrs", shared_data, limit=5) == out


def test_the_table_shows_each_saved_check_in_percent(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    assert "not measured yet" in id_knowledge.markdown("p", "toy", ["a"])
    group = ev_mod.ranking_result([1, None], "paper")
    r = {**ev_mod.ranking_result([1, 12, None, 3], "paper"),
         "by_training": {"mentioned in training dialogs": group, "not mentioned": None}}
    report.write_json(r, tmp_path / "p" / "toy" / "a.id_knowledge.json")
    lines = id_knowledge.markdown("p", "toy", ["a", "b"]).splitlines()
    assert len(lines) == 3 and lines[2].startswith("| a | 4 | 25.00 | 50.00 [")
    assert lines[2].endswith("| 50.00 (2) | - |")
