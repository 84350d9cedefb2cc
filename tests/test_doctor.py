"""``prunebench doctor``: what it finds, what it says to do, its exit code and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prunebench import doctor
from prunebench.cli import app
from prunebench.data import paths

runner = CliRunner()
IDX = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
       "t10k-labels-idx1-ubyte.gz"]


@pytest.fixture
def no_data(tmp_path, monkeypatch):
    """No dataset anywhere: empty cache, no env var, no system paths."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(paths.ENV_VAR, raising=False)
    monkeypatch.setattr(paths, "SYSTEM_ROOTS", ())


@pytest.fixture
def fashion(tmp_path, monkeypatch, no_data) -> Path:
    """Fashion-MNIST (file names only: doctor never reads them) under $PRUNEBENCH_DATA."""
    root = tmp_path / "data"
    (root / "fashion-mnist").mkdir(parents=True)
    for name in IDX:
        (root / "fashion-mnist" / name).write_bytes(b"")
    monkeypatch.setenv(paths.ENV_VAR, str(root))
    return root / "fashion-mnist"


def by_name(checks):
    return {c.name: c for c in checks}


def test_everything_fine(fashion, tmp_path):
    checks = by_name(doctor.diagnose(tmp_path / "runs"))
    assert checks["torch"].ok and "torch" in checks["torch"].detail
    assert checks["device"].ok and ("GPU" in checks["device"].detail)
    assert checks["data:fashion_mnist"].ok and str(fashion) in checks["data:fashion_mnist"].detail
    assert checks["data:synthetic"].ok
    assert not checks["data:cifar10"].ok and not checks["data:cifar10"].required
    assert "--data-dir" in checks["data:cifar10"].fix
    assert checks["store"].ok and "will be created" in checks["store"].detail
    assert not (tmp_path / "runs").exists()  # doctor creates nothing
    assert {"extra:ray", "extra:matplotlib", "extra:scipy", "extra:torch-pruning"} <= set(checks)
    res = runner.invoke(app, ["doctor", "--out", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    assert "everything needed is fine" in res.output
    assert "data:fashion_mnist" in res.output and "torch" in res.output


def test_json(fashion, tmp_path):
    res = runner.invoke(app, ["doctor", "--out", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["ok"] is True
    names = [c["name"] for c in data["checks"]]
    assert "torch" in names and "store" in names and "data:mnist" in names
    assert all(c["status"] in ("ok", "note", "problem") for c in data["checks"])


def test_missing_default_dataset_is_a_problem_with_a_fix(no_data, tmp_path):
    res = runner.invoke(app, ["doctor", "--out", str(tmp_path)])
    assert res.exit_code == 1, res.output
    assert "PROBLEM" in res.output
    res = runner.invoke(app, ["doctor", "--out", str(tmp_path), "--json"])
    data = json.loads(res.stdout)
    fm = next(c for c in data["checks"] if c["name"] == "data:fashion_mnist")
    assert fm["status"] == "problem" and not data["ok"]
    for hint in ("dataset-fashion-mnist", "--data-dir", "PRUNEBENCH_DATA"):
        assert hint in fm["fix"]


def test_explicit_data_dir(fashion, tmp_path):
    checks = by_name(doctor.diagnose(tmp_path, data_dir=str(fashion)))
    assert checks["data:fashion_mnist"].ok
    empty = tmp_path / "empty"
    empty.mkdir()
    checks = by_name(doctor.diagnose(tmp_path, data_dir=str(empty)))
    assert not checks["data:fashion_mnist"].ok and "no usable data" in \
        checks["data:fashion_mnist"].detail


def test_store_a_file_is_a_problem(fashion, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    res = runner.invoke(app, ["doctor", "--out", str(f), "--json"])
    assert res.exit_code == 1
    store = next(c for c in json.loads(res.stdout)["checks"] if c["name"] == "store")
    assert store["status"] == "problem" and "not a directory" in store["detail"]
    assert store["fix"]


def test_store_not_writable(fashion, tmp_path, monkeypatch):
    out = tmp_path / "ro"
    out.mkdir()

    def deny(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(doctor.tempfile, "mkstemp", deny)
    check = by_name(doctor.diagnose(out))["store"]
    assert not check.ok and check.required and "not writable" in check.detail
    assert "chmod" in check.fix


def test_existing_store_and_bad_index(fashion, tmp_path):
    out = tmp_path / "runs"
    out.mkdir()
    checks = by_name(doctor.diagnose(out))
    assert checks["store"].ok and "writable" in checks["store"].detail
    assert not list(out.iterdir())  # the probe file is gone
    (out / "index.sqlite").write_bytes(b"garbage" * 50)
    idx = by_name(doctor.diagnose(out))["store index"]
    assert not idx.ok and not idx.required and "rebuilds it" in idx.fix
    assert doctor.healthy(doctor.diagnose(out))


def test_missing_extras(fashion, tmp_path, monkeypatch):
    monkeypatch.setattr(doctor, "EXTRAS", (
        ("no_such_module_xyz", "no-such-dist", "nothing", "pip install no-such-dist", False),
        ("no_such_required_xyz", "needed-dist", "everything", "pip install needed-dist", True),
    ))
    checks = by_name(doctor.diagnose(tmp_path))
    assert checks["extra:no-such-dist"].status == "note"
    assert checks["extra:needed-dist"].status == "problem"
    assert checks["extra:needed-dist"].fix == "pip install needed-dist"
    assert not doctor.healthy(list(checks.values()))


def test_gpu_is_reported(fashion, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"Fake GPU {i}")
    device = by_name(doctor.diagnose(tmp_path))["device"]
    assert device.ok and "2 GPU(s)" in device.detail and "cuda:1 Fake GPU 1" in device.detail
