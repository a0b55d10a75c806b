"""Test configuration: make tests/helpers.py importable as `helpers`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import os  # noqa: E402

import pytest  # noqa: E402

RUN_DIR = Path(__file__).resolve().parents[1] / ".varon" / "run"


@pytest.fixture(scope="session", autouse=True)
def _no_dead_metrics_left_behind():
    """Processes the tests kill with -9 cannot remove their `varon status` metrics file from the checkout's
    .varon/run; remove the ones whose process is gone, so a later `varon status` there is not misled."""
    before = set(RUN_DIR.glob("*.json")) if RUN_DIR.is_dir() else set()
    yield
    if not RUN_DIR.is_dir():
        return
    for path in set(RUN_DIR.glob("*.json")) - before:
        try:
            os.kill(int(path.stem), 0)
        except (ValueError, ProcessLookupError):
            path.unlink(missing_ok=True)
        except PermissionError:
            pass
