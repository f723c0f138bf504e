"""One call to load a dataset by name, parsed once per process."""
from __future__ import annotations

import os

from crslib.data.inspired import load_inspired, load_inspired_catalog
from crslib.data.redial import load_redial, load_redial_catalog
from crslib.data.schema import DATASETS, Catalog, DataError, Dataset, data_root

_LOADED: dict[tuple, Dataset] = {}  # load()'s datasets in this process, by key (see there)


def load(dataset: str, root: str | os.PathLike | None = None, strict: bool = False) -> Dataset:
    """Load ``redial`` (train, test) or ``inspired`` (train, dev, test).

    Parsed once per process: a later call for the same dataset, data root and ``strict``,
    while the dataset's files are unchanged (names, sizes, modification times), returns the
    same object — a notebook that trains and scores dozens of runs reads ReDial once instead
    of every time (about a second each). Treat it as read-only, as every crslib caller does.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {DATASETS}")
    folder = data_root(root).resolve() / dataset
    files = tuple(sorted((p.name, st.st_size, st.st_mtime_ns) for p in folder.glob("*")
                         if p.is_file() and (st := p.stat()))) if folder.is_dir() else ()
    key = (dataset, str(folder), strict, files)
    if key not in _LOADED:
        for old in [k for k in _LOADED if k[:3] == key[:3]]:  # the files changed since
            del _LOADED[old]
        loader = load_redial if dataset == "redial" else load_inspired
        _LOADED[key] = loader(root, strict=strict)
    return _LOADED[key]


def catalog_or_none(dataset: str, root: str | os.PathLike | None = None) -> Catalog | None:
    """The dataset's catalog alone (titles, for a chat), or None when its files are not there."""
    loaders = {"redial": load_redial_catalog, "inspired": load_inspired_catalog}
    loader = loaders.get(dataset)
    try:
        return loader(data_root(root) / dataset) if loader else None
    except DataError:
        return None
