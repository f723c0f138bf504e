"""Loaders on small fixtures written here (both official formats, malformed records), and on
the shared real data when present."""
import json
from pathlib import Path

import pytest

from crslib import data
from crslib.data import download, stats
from crslib.data import DataError, Item

MOVIES = "movieId,movieName,nbMentions\r\n111,Alien  (1979),5\r\n222,The Mummy ,2\r\n333,Heat (1995),1\r\n"
ID2INFO = {"111": {"name": "Alien (1979)", "genre": ["horror", "sci-fi"], "plot": "In space.",
                   "director": ["Ridley Scott"], "writer": [], "star": ["Sigourney Weaver"],
                   "imdb_id": "tt0078748"}}


def redial_record(conv, messages, seeker=1):
    return {"movieMentions": {}, "respondentQuestions": [], "messages": messages,
            "conversationId": conv, "respondentWorkerId": 2, "initiatorWorkerId": seeker,
            "initiatorQuestions": []}


def msg(sender, text, k=0):
    return {"timeOffset": k, "text": text, "senderWorkerId": sender, "messageId": k}


GOOD = redial_record("7", [msg(1, "hi, I loved @111"), msg(1, "and @222 too"),
                           msg(2, "try @333 &amp; @111"), msg(1, "thanks @you")])


def write_redial(root: Path, lines: list[str]) -> Path:
    (root / "redial").mkdir(parents=True, exist_ok=True)
    (root / "redial" / "movies_with_mentions.csv").write_bytes(MOVIES.encode())
    (root / "redial" / "id2info.json").write_text(json.dumps(ID2INFO))
    (root / "redial" / "train_data.jsonl").write_text("\n".join(lines) + "\n")
    (root / "redial" / "test_data.jsonl").write_text(json.dumps(GOOD) + "\n")
    return root


def test_redial_valid_is_a_seeded_slice_of_train_disjoint_from_the_rest(tmp_path):
    lines = [json.dumps(redial_record(str(c), [msg(1, "hi @111"), msg(2, "try @333")]))
             for c in range(100, 120)]
    ds = data.load_redial(write_redial(tmp_path, lines))
    valid, rest = ds["valid"], ds["train_minus_valid"]
    assert len(valid) == 2 and len(rest) == 18  # round(0.1 * 20)
    assert {d.id for d in valid}.isdisjoint({d.id for d in rest})
    assert {d.id for d in valid} | {d.id for d in rest} == {d.id for d in ds["train"]}
    assert ds.validation == valid and len(ds["train"]) == 20  # train stays the official file
    # golden: the slice depends on the ids and the seed, not on the order of the file
    assert sorted(d.id for d in valid) == sorted(data.redial_valid_ids(ds["train"]))
    shuffled = data.load_redial(write_redial(tmp_path / "b", lines[::-1]))
    assert sorted(d.id for d in shuffled["valid"]) == sorted(d.id for d in valid)
    assert data.redial_valid_ids(ds["train"], seed=1) != data.redial_valid_ids(ds["train"])
    with pytest.raises(KeyError, match="valid"):
        ds["dev"]


def test_item_text_leaves_out_empty_fields():
    it = Item("1", "Alien", "1979", ("horror", "sci-fi"), (), "In space.")
    assert it.text() == "title: Alien | year: 1979 | genres: horror, sci-fi | plot: In space."
    assert Item("2", "The Mummy").text() == "title: The Mummy"
    assert Item("3", "X", keywords=("a", "b")).text() == "title: X | keywords: a, b"


def test_split_title_year_and_normalize():
    assert data.split_title_year("Headhunter  (2009)") == ("Headhunter", "2009")
    assert data.split_title_year("The Mummy ") == ("The Mummy", "")
    assert data.split_title_year("Akira ()") == ("Akira", "")
    assert data.normalize_title("The Fast & the Furious") == "fast and the furious"
    assert data.slug("Frozen 2", "2019") == "frozen-2-2019"


def test_redial_raw_merges_speaker_runs_and_joins_metadata(tmp_path):
    ds = data.load_redial(write_redial(tmp_path, [json.dumps(GOOD)]))
    (d,) = ds["train"]
    assert d.id == "7"
    assert [t.role for t in d.turns] == ["user", "assistant", "user"]
    assert d.turns[0].text == "hi, I loved @111 and @222 too"
    assert d.turns[0].items == ("111", "222")
    assert d.turns[1].text == "try @333 & @111"  # HTML entities unescaped
    assert d.turns[2].text == "thanks ＠you"  # a literal @ can never read as a mention
    alien = ds.catalog["111"]
    assert (alien.title, alien.year, alien.genres, alien.plot) == (
        "Alien", "1979", ("horror", "sci-fi"), "In space.")
    assert ds.catalog["222"].text() == "title: The Mummy"  # no metadata: title (and year) only
    assert ds.report.skipped == {}


def test_redial_bad_records_are_counted_with_file_and_line(tmp_path):
    lines = [json.dumps(GOOD), "{not json", json.dumps(redial_record("8", [])),
             json.dumps(redial_record("9", [msg(1, "I like @999 and @111")]))]
    ds = data.load_redial(write_redial(tmp_path, lines))
    assert [d.id for d in ds["train"]] == ["7", "9"]
    assert ds.report.skipped == {"malformed_json": 1, "empty_dialog": 1, "unknown_item": 1}
    assert "train_data.jsonl:2" in ds.report.examples["malformed_json"][0]
    assert "train_data.jsonl:3" in ds.report.examples["empty_dialog"][0]
    assert "@999" in ds.report.examples["unknown_item"][0]
    # the unknown mention stays as text, never as an item
    assert ds["train"][1].turns[0].text == "I like 999 and @111"
    assert ds["train"][1].turns[0].items == ("111",)
    with pytest.raises(DataError, match=r"train_data.jsonl:2"):
        data.load_redial(tmp_path, strict=True)


def test_redial_bytes_arrays_and_strangers_are_counted_with_file_and_line(tmp_path):
    third = redial_record("10", [msg(1, "hi"), msg(3, "who am I?"), msg(2, "hello")])
    write_redial(tmp_path, [json.dumps(GOOD), "[1, 2]", json.dumps(third)])
    path = tmp_path / "redial" / "train_data.jsonl"
    path.write_bytes(path.read_bytes() + b'{"messages": "caf\xe9"}\n')  # Latin-1, not UTF-8
    ds = data.load_redial(tmp_path)
    assert [d.id for d in ds["train"]] == ["7", "10"]
    assert ds.report.skipped == {"not_a_json_object": 1, "unknown_speaker": 1, "invalid_utf8": 1}
    assert "train_data.jsonl:2: line 2 is a JSON list, not an object" in \
        ds.report.examples["not_a_json_object"][0]
    assert "train_data.jsonl:3 message 1: senderWorkerId 3" in ds.report.examples["unknown_speaker"][0]
    assert "train_data.jsonl:4: byte" in ds.report.examples["invalid_utf8"][0]
    assert [t.text for t in ds["train"][1].turns] == ["hi", "hello"]
    with pytest.raises(DataError, match=r"train_data.jsonl:2: line 2 is a JSON list"):
        data.load_redial(tmp_path, strict=True)


def test_redial_hf_schema_gives_the_same_dialogs(tmp_path):
    ds = data.load_redial(write_redial(tmp_path, [json.dumps(GOOD)]))
    hf_row = dict(GOOD, conversationId=7,
                  movieMentions=[{"movieId": "111", "movieName": "Alien (1979)"}],
                  respondentQuestions=[], initiatorQuestions=[])
    (d,) = data.redial_from_hf([hf_row], ds.catalog)
    assert d == ds["train"][0]


def test_redial_hf_parquet_roundtrip(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = data.load_redial(write_redial(tmp_path, [json.dumps(GOOD)]))
    rows = [dict(GOOD, conversationId=7, movieMentions=[], respondentQuestions=[],
                 initiatorQuestions=[])]
    for r in rows:
        r.pop("movieMentions"), r.pop("respondentQuestions"), r.pop("initiatorQuestions")
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "train.parquet"))
    (d,) = data.load_redial_hf(tmp_path / "train.parquet", ds.catalog)
    assert d == ds["train"][0]


def test_load_parses_once_until_a_file_changes(tmp_path):
    write_redial(tmp_path, [json.dumps(GOOD)])
    first = data.load("redial", tmp_path)
    assert data.load("redial", tmp_path) is first  # the same files: not parsed again
    assert data.load("redial", tmp_path, strict=True) is not first
    other = redial_record("8", [msg(1, "hello"), msg(2, "try @111")])
    write_redial(tmp_path, [json.dumps(GOOD), json.dumps(other)])
    again = data.load("redial", tmp_path)
    assert again is not first and [d.id for d in again["train"]] == ["7", "8"]


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match=r"movies_with_mentions.csv: file not found.*make data"):
        data.load_redial(tmp_path)
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load("movielens", tmp_path)


INSPIRED_HEADER = ("dialog_id\tutt_id\tspeaker\tturn_id\ttext\ttext_with_placeholder\tmovies\t"
                   "genres\tpeople_names\tmovie_dict\tgenre_dict\tactor_dict\tdirector_dict\t"
                   "others_dict\texpert_label\tsecond_label\tfine_label\tcoarse_label\tmovie_id")
MOVIE_DB = ("video_id\ttitle\tyear\tgenre\tdirector\tactors\tshort_plot\ttrain_titles\n"
            "\tFrozen 2\t2019\tanimation, family\t\t\tElsa returns.\tFrozen II\n"
            "\tThe Avengers\t2012\taction\t\t\t\t\n"
            "\tAvengers\t2012\t\t\t\t\t\n"
            "\tHeat\t1995\tcrime\t\t\t\t\n")


def tsv_row(did, k, speaker, text, movies="", ncols=19):
    cells = [did, str(k), speaker, "1", text, text, movies] + [""] * 12
    return "\t".join(cells[:ncols])


def test_inspired_tsv_mentions_titles_and_bad_rows(tmp_path):
    root = tmp_path / "inspired"
    root.mkdir()
    (root / "movie_database.tsv").write_text(MOVIE_DB)
    rows = [INSPIRED_HEADER,
            tsv_row("d1", 1, "RECOMMENDER", "Hi! Email me @home"),
            tsv_row("d1", 2, "SEEKER", "I liked Frozen 2 a lot QUOTATION_MARK yes", "Frozen 2 (2019)"),
            tsv_row("d1", 3, "RECOMMENDER", "Then watch The Avengers", "The Avengers (2012);  Nope (2022)"),
            tsv_row("d1", 4, "RECOMMENDER", "or Heat", "Heat (1995)"),
            tsv_row("d1", 5, "SEEKER", "short row", ncols=5),
            tsv_row("d1", 6, "SEEKER", "odd turn id").replace("\t1\todd", "\tsix\todd")]
    for split in ("train", "dev", "test"):
        (root / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    ds = data.load_inspired(tmp_path)
    assert len(ds.catalog) == 3  # "The Avengers"/"Avengers" (2012) merged
    (d,) = ds["test"]
    assert [t.role for t in d.turns] == ["assistant", "user", "assistant"]
    assert d.turns[0].text == "Hi! Email me ＠home"  # a literal @ can never read as a mention
    assert d.turns[1].text == 'I liked @frozen-2-2019 a lot " yes'
    assert d.turns[2].text == "Then watch @avengers-2012 or @heat-1995"
    assert d.turns[2].items == ("avengers-2012", "heat-1995")
    assert ds.catalog.find("Frozen II") == "frozen-2-2019"  # train spelling alias
    assert ds.report.skipped["unknown_item"] == 3  # 'Nope (2022)' in each split
    assert ds.report.skipped["tsv_row_missing_columns"] == 3
    assert "test.tsv:6" in " ".join(ds.report.examples["tsv_row_missing_columns"])
    assert ds.report.skipped["catalog_duplicate_title_merged"] == 1
    assert ds.report.skipped["non_integer_turn_id"] == 3
    assert "test.tsv:7: turn_id 'six'" in " ".join(ds.report.examples["non_integer_turn_id"])


def test_stats_counts_instances_and_repeats(tmp_path):
    ds = data.load_redial(write_redial(tmp_path, [json.dumps(GOOD)]))
    s = stats.split_stats(ds["train"])
    # turn 2 (assistant) mentions 333 (new) and 111 (mentioned before by the seeker)
    assert s == {"dialogs": 1, "turns": 3, "assistant_turns": 1, "rec_turns": 1,
                 "rec_instances": 2, "repeat_rate": 0.5}


def test_mention_parts():
    assert data.mention_parts("see @12 and @frozen-2-2019!") == [
        "see ", ("12",), " and ", ("frozen-2-2019",), "!"]


def test_download_verifies_checksums_and_never_leaves_partial_files(tmp_path):
    src = tmp_path / "upstream"
    src.mkdir()
    (src / "movies.csv").write_bytes(MOVIES.encode())
    url = (src / "movies.csv").as_uri()
    good = {"redial": [download.Source("redial/movies_with_mentions.csv", url,
                                       download.sha256(MOVIES.encode()))]}
    out = tmp_path / "data"
    rep = download.download("redial", out, sources=good)
    assert rep["redial/movies_with_mentions.csv"]["verified"] is True
    assert (out / "redial/movies_with_mentions.csv").read_bytes() == MOVIES.encode()
    assert download.download("redial", out, sources=good)[
        "redial/movies_with_mentions.csv"]["status"] == "present"
    bad = {"redial": [download.Source("redial/movies_with_mentions.csv", url, "0" * 64)]}
    with pytest.raises(DataError, match="does not match"):
        download.download("redial", tmp_path / "other", sources=bad)
    assert not list((tmp_path / "other").rglob("*"))  # nothing half-written
    gone = {"redial": [download.Source("redial/x.csv", (src / "absent.csv").as_uri(), None)]}
    with pytest.raises(DataError, match="Offline\\? Copy the official files"):
        download.download("redial", out, sources=gone)


def test_download_reads_zip_members_and_repairs_id2info(tmp_path):
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("redial_dataset/test_data.jsonl", "{}\n")
    (tmp_path / "r.zip").write_bytes(buf.getvalue())
    broken = b'{"81078": {"imdb_id": "tt0285492"}f, "81080": {}}'
    (tmp_path / "id2info.json").write_bytes(broken)
    srcs = {"redial": [
        download.Source("redial/test_data.jsonl", (tmp_path / "r.zip").as_uri(),
                        download.sha256(buf.getvalue()), member="test_data.jsonl"),
        download.Source("redial/id2info.json", (tmp_path / "id2info.json").as_uri(), None,
                        repair="cfcrs_id2info_stray_f")]}
    download.download("redial", tmp_path / "d", sources=srcs)
    assert (tmp_path / "d/redial/test_data.jsonl").read_text() == "{}\n"
    assert json.loads((tmp_path / "d/redial/id2info.json").read_text())["81078"]


def test_official_source_table_is_complete():
    for name, files in (("redial", data.REDIAL_FILES), ("inspired", data.INSPIRED_FILES)):
        paths = {s.path for s in download.SOURCES[name]}
        assert {f"{name}/{f}" for f in files} <= paths
        assert all(s.url.startswith("https://") for s in download.SOURCES[name])


def test_cli_stats_prints_json(tmp_path, capsys):
    from crslib.cli import main
    write_redial(tmp_path, [json.dumps(GOOD), "{bad"])
    assert main(["data", "stats", "--dataset", "redial", "--data-root", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["splits"]["train"]["rec_instances"] == 2
    assert out["skipped"] == {"malformed_json": 1}
    assert main(["data", "stats", "--dataset", "inspired", "--data-root", str(tmp_path)]) == 2


# ------------------------------------------------------------------ shared real data
def test_shared_redial(shared_data):
    ds = data.load_redial(shared_data)
    assert len(ds["test"]) == 1342
    assert len(ds.catalog) == 6924
    assert ds.report.skipped.get("unknown_item", 0) == 0  # every @id resolves
    test_mentions = [i for d in ds["test"] for t in d.turns for i in t.items]
    assert len(test_mentions) == 8521 and all(i in ds.catalog for i in test_mentions)
    assert sum(bool(it.plot) for it in ds.catalog) == 6451
    valid = sorted(d.id for d in ds["valid"])  # golden: the slice every tool selects on
    assert len(valid) == 227 and valid[:5] == ["10000", "10017", "10034", "10054", "10102"]


def test_shared_inspired(shared_data):
    ds = data.load_inspired(shared_data)
    assert len(ds["test"]) == 99 and len(ds["dev"]) == 99
    s = stats.split_stats(ds["test"])
    assert s["rec_instances"] > 150
