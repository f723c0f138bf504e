"""``make data``: fetch the official ReDial and INSPIRED files into the data root.

Each source is a URL and, where one is published, its sha256. A file is written to a
temporary name, verified, then moved into place, so an interrupted or corrupted download never
leaves a file the loaders would read. Files already present are kept unless ``force``.
Without internet the error says exactly which files to put where.
"""
from __future__ import annotations

import hashlib
import io
import os
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from crslib.data import DataError, data_root
from crslib.report import atomic


@dataclass(frozen=True)
class Source:
    path: str              # where the file goes, relative to the data root
    url: str
    sha256: str | None     # of the file, or of the archive when ``member`` is set; None: no
                           # published checksum (the computed one is reported)
    member: str | None = None   # file inside a zip archive at ``url``
    repair: str | None = None   # name of a known upstream defect fixed after download


_REDIAL_ZIP = "https://github.com/ReDialData/website/raw/data/redial_dataset.zip"
_REDIAL_ZIP_SHA = "b48756681ec6f84e0af36979c5e9baa21ea8d9e7036b8764ea9b787bb0baf69b"
_INSPIRED = "https://raw.githubusercontent.com/sweetpeach/Inspired/master/data"

SOURCES: dict[str, list[Source]] = {
    "redial": [
        Source("redial/train_data.jsonl", _REDIAL_ZIP, _REDIAL_ZIP_SHA, member="train_data.jsonl"),
        Source("redial/test_data.jsonl", _REDIAL_ZIP, _REDIAL_ZIP_SHA, member="test_data.jsonl"),
        Source("redial/movies_with_mentions.csv",
               "https://raw.githubusercontent.com/ReDialData/website/data/movies_with_mentions.csv",
               "0d408daa474ac95b959a739a261dddd997dd800f5ea585da15a434a26187dbb0"),
        Source("redial/id2info.json",
               "https://raw.githubusercontent.com/wxl1999/CFCRS/main/data/redial/id2info.json",
               "7bdfe9a9c7f1b4d59aa9a5aeba0029071fd5a7232b61c8257212a335ffe424f7",
               repair="cfcrs_id2info_stray_f"),
    ],
    "inspired": [
        Source("inspired/train.tsv", f"{_INSPIRED}/dialog_data/train.tsv", None),
        Source("inspired/dev.tsv", f"{_INSPIRED}/dialog_data/dev.tsv",
               "15a955be002222ba9e95f886802e06a91fb5e457f8a25deae3e7908d58faa947"),
        Source("inspired/test.tsv", f"{_INSPIRED}/dialog_data/test.tsv",
               "a10f63ff26045158460730d4829ffba74bee86fb744d9f48c1c1c511ef609993"),
        Source("inspired/movie_database.tsv", f"{_INSPIRED}/movie_database.tsv", None),
    ],
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fetch(url: str, timeout: float = 60) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (fixed URL table)
        return r.read()


def _verify(url: str, data: bytes, expected: str | None, dest: Path) -> None:
    if expected and sha256(data) != expected:
        raise DataError(f"{url}: sha256 {sha256(data)} does not match the expected {expected}; "
                        f"nothing was written to {dest}")


def _repair(name: str, data: bytes) -> bytes:
    if name == "cfcrs_id2info_stray_f":
        # upstream has `..."imdb_id": "tt0285492"}f, "81080": ...` (record 81078); drop the `f`
        return data.replace(b'"tt0285492"}f, ', b'"tt0285492"}, ', 1)
    raise ValueError(f"unknown repair {name!r}")


def download(dataset: str = "all", root: str | os.PathLike | None = None, force: bool = False,
             sources: dict[str, list[Source]] | None = None) -> dict:
    """Fetch ``dataset`` (``redial``, ``inspired`` or ``all``); return what happened per file."""
    root = data_root(root)
    sources = sources or SOURCES
    names = list(sources) if dataset == "all" else [dataset]
    report: dict[str, dict] = {}
    archives: dict[str, bytes] = {}
    for name in names:
        for src in sources[name]:
            dest = root / src.path
            if dest.exists() and not force:
                report[src.path] = {"status": "present"}
                continue
            try:
                if src.member:
                    if src.url not in archives:
                        archives[src.url] = _fetch(src.url)
                        _verify(src.url, archives[src.url], src.sha256, dest)
                    with zipfile.ZipFile(io.BytesIO(archives[src.url])) as z:
                        members = {Path(m).name: m for m in z.namelist()}
                        if src.member not in members:
                            raise DataError(f"{src.url}: archive has no {src.member}")
                        data = z.read(members[src.member])
                else:
                    data = _fetch(src.url)
            except (urllib.error.URLError, OSError) as e:
                raise DataError(
                    f"cannot download {src.url} ({e}). Offline? Copy the official files by hand "
                    f"into {root}/ (see README 'Data'), e.g. {src.path}, or set CRSLIB_DATA to "
                    "a folder that has them.") from e
            if src.repair:
                data = _repair(src.repair, data)
            digest = sha256(data)
            if not src.member:
                _verify(src.url, data, src.sha256, dest)
            with atomic(dest) as tmp:
                tmp.write_bytes(data)
            report[src.path] = {"status": "downloaded", "bytes": len(data), "sha256": digest,
                                "verified": bool(src.sha256)}
    return report
