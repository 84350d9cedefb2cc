from __future__ import annotations

import json
from pathlib import Path

import pytest

from prunebench.errors import RecipeError, RegistryError
from prunebench.studies import STUDIES, expand_study, load_study, run_study

TINY_STUDY = {
    "name": "tiny-study",
    "title": "tiny",
    "setup": "S3.1",
    "presets": {
        "cpu": {
            "base": {
                "data": {"name": "synthetic", "batch_size": 64, "val_size": 128},
                "model": {"name": "mlp", "kwargs": {"depth": 3, "width": 16}},
                "pretrain": {"epochs": 2, "lr": "0:0.1"},
                "prune": {"method": "l1", "layers": 0.5},
                "retrain": {"epochs": 2, "lr": "0:0.01,1:0.001"},
            },
            "columns": {"key": "prune.layers", "values": [0.3, 0.6]},
            "rows": [
                {"label": "LR 0.01", "set": {"retrain.lr": "0:0.01,1:0.001"}},
                {"label": "LR 0.001", "set": {"retrain.lr": "0:0.001,1:0.0001"}},
                {"label": "Scratch", "set": {"retrain.init": "scratch", "retrain.budget": "E"}},
            ],
            "seeds": 2,
        }
    },
}


@pytest.fixture
def study_file(tmp_path) -> Path:
    import yaml

    p = tmp_path / "tiny_study.yaml"
    p.write_text(yaml.safe_dump(TINY_STUDY))
    return p


def test_builtin_studies_expand_and_validate():
    assert {"lr-effect", "scratch-vs-inherit", "lr-catch-up", "trainability", "crossval"} <= set(
        STUDIES)
    for name in STUDIES:
        spec = load_study(name)
        assert {"cpu", "paper"} <= set(spec.presets)
        for preset, p in spec.tables():
            cells = expand_study(spec, preset)
            assert len(cells) == len(p.rows) * len(p.columns.values) * p.seeds


def test_grid_reuses_shared_pretraining(study_file, tmp_path):
    out = tmp_path / "runs"
    manifest = run_study(study_file, out, preset="cpu")
    assert manifest["complete"] and len(manifest["cells"]) == 3 * 2 * 2
    # one dense model per seed, never one per cell
    assert len(list((out / "stages").glob("pretrain-*"))) == 2
    assert len(manifest["pretrain_stages"]) == 2
    # one pruned model per (ratio, seed): the two LR rows share it
    assert len(list((out / "stages").glob("prune-*"))) == 2 * 2
    # the dense reference per seed reuses the cells' pretraining stage
    assert set(manifest["dense_runs"]) == {"0", "1"}
    for rid in manifest["dense_runs"].values():
        ref = json.loads((out / rid / "result.json").read_text())
        assert ref["stages"]["pretrain"] in manifest["pretrain_stages"] and "pruned" not in ref
    saved = json.loads((out / "studies" / "tiny-study-cpu.json").read_text())
    assert saved["cells"] == manifest["cells"]
    for cell in manifest["cells"]:
        assert (out / cell["run"] / "result.json").is_file()


def test_rerun_skips_finished_cells(study_file, tmp_path, monkeypatch):
    out = tmp_path / "runs"
    run_study(study_file, out, preset="cpu", seeds=1)
    import prunebench.pipeline as pl

    monkeypatch.setattr(pl, "_execute", lambda *a, **k: pytest.fail("re-ran a finished cell"))
    again = run_study(study_file, out, preset="cpu", seeds=1)
    assert again["complete"]


def test_parallel_process_backend_gives_the_same_runs(study_file, tmp_path):
    serial = run_study(study_file, tmp_path / "a", preset="cpu", seeds=1)
    parallel = run_study(study_file, tmp_path / "b", preset="cpu", seeds=1, workers=2,
                         backend="process")
    assert [c["run"] for c in serial["cells"]] == [c["run"] for c in parallel["cells"]]
    for c in serial["cells"]:
        a = json.loads((tmp_path / "a" / c["run"] / "result.json").read_text())
        b = json.loads((tmp_path / "b" / c["run"] / "result.json").read_text())
        assert a["test_acc"] == b["test_acc"]


def test_bad_study_input(study_file, tmp_path):
    with pytest.raises(RegistryError, match="lr-effect"):
        load_study("no-such-study")
    with pytest.raises(RecipeError, match="no preset"):
        expand_study(load_study(study_file), "gpu")
    with pytest.raises(RecipeError, match="backend"):
        run_study(study_file, tmp_path, preset="cpu", seeds=1, workers=2, backend="mpi")


FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


@pytest.mark.skipif(not FMNIST.exists(), reason="Fashion-MNIST not installed (make data)")
def test_trainability_study_end_to_end_reduced(tmp_path):
    """The built-in MLP-7 study on a reduced size: JSV collapses after pruning, OrthP -> 1."""
    overrides = ["data.train_subset=2000", "data.val_size=500", "pretrain.epochs=2",
                 "retrain.epochs=2"]  # (the rows' LRs are the study's: never --set)
    manifest = run_study("trainability", tmp_path, preset="cpu", overrides=overrides)
    assert manifest["complete"] and len(manifest["cells"]) == 8
    results = {}
    for c in manifest["cells"]:
        r = json.loads((tmp_path / c["run"] / "result.json").read_text())
        results[(c["row"], c["column"])] = r
    for (row, _col), r in results.items():
        jsv = r["jsv"]
        if "OrthP" in row:
            assert jsv["pruned"]["mean"] == pytest.approx(1.0, abs=1e-3)
        else:
            assert jsv["pruned"]["mean"] < jsv["dense"]["mean"]
        assert r["ta"]["test"] is not None


def test_crossval_study_gives_a_verdict(study_file, tmp_path):
    import yaml

    spec = dict(TINY_STUDY, name="tiny-crossval", analysis="crossval")
    p = dict(spec["presets"]["cpu"])
    p["rows"] = [{"label": "A: l1", "set": {"prune.method": "l1"}},
                 {"label": "B: random", "set": {"prune.method": "random"}}]
    p["columns"] = {"key": "retrain.lr", "values": ["0:0.01", "0:0.001"]}
    spec["presets"] = {"cpu": p}
    path = tmp_path / "cv.yaml"
    path.write_text(yaml.safe_dump(spec))
    manifest = run_study(path, tmp_path / "runs", preset="cpu", seeds=2)
    a = manifest["analysis"]
    assert a["verdict"].startswith(("consistent winner", "inconsistent"))
    assert len(a["table"]) == 4 and all(len(r["runs"]) == 2 for r in a["table"])
    bad = dict(spec, presets={"cpu": dict(p, rows=p["rows"][:1])})
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(RecipeError, match="2 rows"):
        load_study(path)


def test_lr_effect_paper_preset_covers_tables_6_and_7():
    spec = load_study("lr-effect")
    assert spec.resolve("paper") == ["paper-resnet56", "paper-vgg19"]
    models = {expand_study(spec, n)[0].recipe.model.name for n in spec.resolve("paper")}
    assert models == {"resnet56", "vgg19"}
    with pytest.raises(RecipeError, match="groups"):
        expand_study(spec, "paper")


@pytest.mark.parametrize(("ratio", "sparsity", "speedup"),
                         [(0.1, 19.24, 1.23), (0.3, 51.01, 1.97), (0.5, 74.87, 3.60),
                          (0.7, 90.98, 8.84)])
def test_vgg19_columns_reproduce_table_7_sparsity(ratio, sparsity, speedup):
    from prunebench.pruning.describe import describe

    d = describe("vgg19", "cifar100", ratio, skip=["features.0"])
    assert d["param_sparsity"] == pytest.approx(sparsity, abs=0.1)
    assert d["speedup"] == pytest.approx(speedup, rel=0.02)


def test_pxfy_dense_reference_is_the_full_dense_run(tmp_path):
    """A PxFy cell's own dense model is the run cut at epoch x; the study's reference is not."""
    import yaml

    from prunebench.report.data import load_study_data

    spec = dict(TINY_STUDY, name="tiny-pxfy")
    p = dict(spec["presets"]["cpu"], seeds=1)
    p["rows"] = [{"label": "P1F1", "set": {"prune.at_epoch": 1, "retrain.epochs": 1}}]
    spec["presets"] = {"cpu": p}
    path = tmp_path / "pxfy.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "runs"
    manifest = run_study(path, out, preset="cpu")
    full = json.loads((out / manifest["dense_runs"]["0"] / "result.json").read_text())
    assert full["dense"]["epochs"] == 2
    data = load_study_data(out / "studies" / "tiny-pxfy-cpu.json")
    for cell in data.cells:
        assert cell.run.result["dense"]["epochs"] == 1
        assert cell.run.dense_acc == full["test_acc"]
