from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny.yaml"


@pytest.fixture
def tiny_recipe() -> Path:
    return TINY


def strip_timing(rows: list[dict]) -> list[dict]:
    """Metrics lines without the wall-clock fields (for determinism checks)."""
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]


def tiny_study_base() -> dict:
    """The base recipe of the tests' tiny studies: synthetic data, a 3-layer MLP, one
    pretraining and one retraining epoch (a fresh dict each call)."""
    return {"data": {"name": "synthetic", "batch_size": 64, "val_size": 128},
            "model": {"name": "mlp", "kwargs": {"depth": 3, "width": 16}},
            "pretrain": {"epochs": 1, "lr": "0:0.1"},
            "prune": {"method": "l1", "layers": 0.5},
            "retrain": {"epochs": 1, "lr": "0:0.01"}}


#: the base recipe of the trust tests' small studies: two pretraining epochs, half of two
#: hidden layers pruned, one retraining epoch, no JSV (copy it before changing it)
SMALL_STUDY_BASE = {"data": {"name": "synthetic", "batch_size": 64, "val_size": 128},
                    "model": {"name": "mlp", "kwargs": {"depth": 3, "width": 16}},
                    "pretrain": {"epochs": 2, "lr": "0:0.1"},
                    "prune": {"method": "l1", "layers": "fc1:0.5,fc2:0.5"},
                    "retrain": {"epochs": 1, "lr": "0:0.01"},
                    "measure": {"jsv_every": 0}}


def copy_store(src: Path, tmp_path: Path) -> Path:
    """A private copy of a module's run store (tests that damage or extend it)."""
    import shutil

    out = tmp_path / "runs"
    shutil.copytree(src, out)
    return out


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """The test models are tiny: one thread is fastest, above all on a shared 2-core box."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
