from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "tiny.yaml"


@pytest.fixture
def tiny_recipe() -> Path:
    return TINY


def strip_timing(rows: list[dict]) -> list[dict]:
    """Metrics lines without the wall-clock fields (for determinism checks)."""
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """The test models are tiny: one thread is fastest, above all on a shared 2-core box."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
