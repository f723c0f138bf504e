import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def shared_data_root() -> Path | None:
    """The shared real data (``$CRSLIB_TEST_DATA``, else ``../shared/data``), if present."""
    root = Path(os.environ.get("CRSLIB_TEST_DATA", REPO.parent / "shared" / "data"))
    return root if (root / "redial" / "test_data.jsonl").is_file() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_root()
    if root is None:
        pytest.skip("shared ReDial/INSPIRED data not found (set CRSLIB_TEST_DATA)")
    return root


def _import_script(relative: str):
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_script():
    """Import one of the repository's scripts as a module: ``load_script("tools/ship_run.py")``."""
    return _import_script
