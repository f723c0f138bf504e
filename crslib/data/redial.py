"""ReDial's official files (and its Hugging Face mirror) read into the schema of
:mod:`crslib.data.schema`; the policies are the package's (:mod:`crslib.data`)."""
from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Iterable

from crslib.data.schema import (Catalog, DataError, Dataset, Dialog, Item, LoadReport, Turn,
                                clean_text, data_root, merge_turns, need_file, split_title_year)

REDIAL_MENTION_RE = re.compile(r"＠([0-9]+)")  # raw "@" escaped to "＠" first


def load_redial_catalog(root: Path, report: LoadReport | None = None) -> Catalog:
    """``movies_with_mentions.csv`` joined with ``id2info.json`` when present."""
    report = report if report is not None else LoadReport()
    info: dict = {}
    info_path = root / "id2info.json"
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{info_path}: not valid JSON at line {e.lineno} col {e.colno}: {e.msg}")
    path = need_file(root / "movies_with_mentions.csv")
    items = []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["movieId", "movieName"]:
            raise DataError(f"{path}:1: expected header movieId,movieName,..., got {header}")
        for lineno, row in enumerate(reader, start=2):
            if len(row) < 2 or not row[0].strip().isdigit():
                report.add("catalog_row_malformed", f"{path}:{lineno}")
                continue
            mid = row[0].strip()
            title, year = split_title_year(row[1])
            meta = info.get(mid) or {}
            extra = {k: meta[k] for k in ("director", "writer", "star", "imdb_id") if meta.get(k)}
            if len(row) > 2 and row[2].strip().isdigit():
                extra["mentions"] = int(row[2])
            items.append(Item(mid, title, year, tuple(meta.get("genre") or ()), (),
                              clean_text(meta.get("plot") or ""), extra))
    return Catalog(items)


def _redial_record(rec: dict, where: str, catalog: Catalog, report: LoadReport,
                   strict: bool) -> Dialog | None:
    """One ReDial record (raw dict schema or HF list-of-records schema) -> Dialog."""
    try:
        seeker = rec["initiatorWorkerId"]
        messages = rec["messages"]
        conv = str(rec["conversationId"])
        respondent = rec.get("respondentWorkerId")
    except (KeyError, TypeError) as e:
        report.add(f"record_missing_field:{e}", where, strict)
        return None
    if not messages:
        report.add("empty_dialog", f"{where} (conversationId {conv})", strict)
        return None
    turns = []
    for k, msg in enumerate(messages):
        text = msg.get("text") if isinstance(msg, dict) else None
        if not isinstance(text, str):
            report.add("message_without_text", f"{where} message {k}", strict)
            continue
        items = []

        def keep(m: re.Match) -> str:
            mid = m.group(1)
            if mid in catalog:
                items.append(mid)
                return f"@{mid}"
            report.add("unknown_item", f"{where} message {k}: @{mid}", strict)
            return mid

        sender = msg.get("senderWorkerId")
        if sender != seeker and respondent is not None and sender != respondent:
            report.add("unknown_speaker", f"{where} message {k}: senderWorkerId {sender!r} is "
                       f"neither the initiator {seeker!r} nor the respondent {respondent!r}",
                       strict)
            continue
        text = REDIAL_MENTION_RE.sub(keep, clean_text(text).replace("@", "＠"))
        role = "user" if sender == seeker else "assistant"
        turns.append(Turn(role, text, tuple(items)))
    turns = merge_turns(turns)
    if not turns:
        report.add("empty_dialog", f"{where} (conversationId {conv})", strict)
        return None
    return Dialog(conv, turns)


def load_redial(root: str | os.PathLike | None = None, splits: Iterable[str] = ("train", "test"),
                strict: bool = False) -> Dataset:
    """ReDial from the official raw files (``<split>_data.jsonl``) under ``root/redial``."""
    root = data_root(root) / "redial"
    report = LoadReport()
    catalog = load_redial_catalog(root, report)
    out = {}
    for split in splits:
        path = need_file(root / f"{split}_data.jsonl")
        dialogs = []
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, start=1):
                where = f"{path}:{lineno}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    report.add("invalid_utf8", f"{where}: byte {e.start} of the line is not "
                               "UTF-8", strict)
                    continue
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    report.add("malformed_json", f"{where}: {e.msg}", strict)
                    continue
                if not isinstance(rec, dict):
                    report.add("not_a_json_object", f"{where}: line {lineno} is a JSON "
                               f"{type(rec).__name__}, not an object (one dialog per line)", strict)
                    continue
                d = _redial_record(rec, where, catalog, report, strict)
                if d is not None:
                    dialogs.append(d)
        out[split] = dialogs
    return Dataset("redial", catalog, out, report)


def redial_from_hf(rows: Iterable[dict], catalog: Catalog, source: str = "hf",
                   strict: bool = False, report: LoadReport | None = None) -> list[Dialog]:
    """Dialogs from rows of the HF ``community-datasets/re_dial`` parquet schema.

    There ``movieMentions`` and the questions are lists of records and ``conversationId`` is
    an int; only ``messages`` (a list of records) and the worker ids are read, so the two
    schemas give identical dialogs.
    """
    report = report if report is not None else LoadReport()
    dialogs = []
    for k, row in enumerate(rows):
        d = _redial_record(dict(row), f"{source} row {k}", catalog, report, strict)
        if d is not None:
            dialogs.append(d)
    return dialogs


def load_redial_hf(path: str | os.PathLike, catalog: Catalog, strict: bool = False) -> list[Dialog]:
    """Read one parquet split of ``community-datasets/re_dial`` (needs ``datasets``)."""
    from datasets import Dataset as HFDataset
    ds = HFDataset.from_parquet(str(need_file(Path(path))))
    return redial_from_hf(ds, catalog, source=str(path), strict=strict)
