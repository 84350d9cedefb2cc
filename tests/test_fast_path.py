"""The fast path (``speed:``): knobs resolve per device, never enter the id, are recorded, and
change how a step runs, never what it computes.

torch.compile runs on CPU here (inductor + gcc); the two compiling tests take ~10-30 s each.
"""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from torch import nn

import prunebench
from prunebench import train as train_mod
from prunebench.data import BatchLoader
from prunebench.recipe import Recipe, SpeedCfg, TrainCfg, build_recipe
from prunebench.train import Loaders, SpeedPlan, TrainState, resolve_speed, train

KNOBS = ("compile", "cuda_graphs", "channels_last", "fused_sgd", "eval_batch_size")


def _recipe(**speed):
    return {
        "data": {"name": "synthetic", "batch_size": 64, "val_size": 100},
        "model": {"name": "mlp", "kwargs": {"depth": 2, "width": 16}},
        "pretrain": {"epochs": 2, "lr": "0:0.1"},
        "prune": None, "retrain": None, "device": "cpu",
        **({"speed": speed} if speed else {}),
    }


def test_auto_resolves_to_off_on_cpu():
    plan = resolve_speed(SpeedCfg(), torch.device("cpu"), 1000)
    assert not (plan.compile or plan.cuda_graphs or plan.channels_last or plan.fused_sgd)
    assert plan.eval_batch_size == 1000
    assert plan.requested == {k: "auto" for k in KNOBS}
    assert resolve_speed(None, torch.device("cpu")).compile is False


def test_auto_resolves_to_on_for_cuda(monkeypatch):
    monkeypatch.setattr(train_mod, "_fused_sgd_supported", lambda device: True)
    plan = resolve_speed(SpeedCfg(), torch.device("cuda"), 1000)
    assert plan.compile and plan.cuda_graphs and plan.channels_last and plan.fused_sgd
    assert plan.compile_mode == "reduce-overhead"
    assert plan.eval_batch_size == train_mod.LARGE_EVAL_BATCH
    off = resolve_speed(SpeedCfg(compile="off", cuda_graphs="on"), torch.device("cuda"), 1000)
    assert not off.compile and not off.cuda_graphs and off.channels_last
    assert any("cuda_graphs" in n for n in off.notes)
    assert resolve_speed(SpeedCfg(eval_batch_size=300), torch.device("cuda"), 1000) \
        .eval_batch_size == 300


def test_cuda_only_knobs_are_not_used_on_cpu():
    plan = resolve_speed(SpeedCfg(compile="on", cuda_graphs="on"), torch.device("cpu"), 100)
    assert plan.compile and not plan.cuda_graphs and plan.compile_mode == "default"
    assert any("CUDA" in n for n in plan.notes)


def test_yaml_on_off_and_validation():
    data = yaml.safe_load("speed: {compile: on, cuda_graphs: off, fused_sgd: auto}")
    r = Recipe.model_validate(data)
    assert (r.speed.compile, r.speed.cuda_graphs, r.speed.fused_sgd) == ("on", "off", "auto")
    with pytest.raises(Exception, match="compile"):
        Recipe.model_validate({"speed": {"compile": "fast"}})
    with pytest.raises(Exception, match="eval_batch_size"):
        Recipe.model_validate({"speed": {"eval_batch_size": 0}})


def test_speed_is_not_part_of_the_id():
    base = prunebench.plan(build_recipe(_recipe()))
    fast = prunebench.plan(build_recipe(_recipe(
        compile="on", cuda_graphs="off", channels_last="on", fused_sgd="on",
        eval_batch_size=77)))
    assert [s.key for s in base] == [s.key for s in fast]


def test_every_knob_is_recorded(tmp_path):
    r = prunebench.run(_recipe(channels_last="on", fused_sgd="on", eval_batch_size=50),
                       out=tmp_path)
    speed = r.result["speed"]
    assert set(speed["requested"]) == set(KNOBS)
    assert set(KNOBS) <= set(speed["used"])
    assert speed["requested"]["fused_sgd"] == "on" and speed["used"]["fused_sgd"] is True
    assert speed["used"]["eval_batch_size"] == 50
    assert speed["used"]["compile"] is False  # auto on CPU
    assert speed["used"]["channels_last"] is True
    # eager rows have no compile time
    assert all("compile_seconds" not in m for m in r.metrics())


def test_fused_sgd_and_channels_last_same_result_as_plain(tmp_path):
    def run(**speed):
        rec = _recipe(**speed)
        rec["model"] = {"name": "lenet5"}
        rec["data"].update(augment=True, kwargs={"channels": 3, "size": 16})
        return prunebench.run(rec, out=tmp_path / str(len(speed)))

    plain = run()
    fast = run(fused_sgd="on", channels_last="on")
    assert plain.id == fast.id
    for a, b in zip(plain.metrics(), fast.metrics(), strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4, abs=1e-5)
        assert a["test_acc"] == pytest.approx(b["test_acc"], abs=1.0)


def test_chunked_loader_gives_the_same_batches():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (37, 3, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 5, (37,), generator=g)
    kw = {"batch_size": 8, "mean": (0.5,) * 3, "std": (0.25,) * 3, "shuffle": True,
          "augment": "crop_flip", "seed": 3}
    one = list(BatchLoader(x, y, chunk_batches=1, **kw).epoch(2))
    many = list(BatchLoader(x, y, chunk_batches=3, **kw).epoch(2))
    assert [b[1].shape[0] for b in many] == [8, 8, 8, 8, 5]
    for (xa, ya), (xb, yb) in zip(one, many, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


# ------------------------------------------------------------------ every sample once


class _IndexLoader:
    """Batches whose first feature is the sample index (shuffled per epoch, last batch partial)."""

    def __init__(self, n: int, batch_size: int) -> None:
        self.num_samples, self.batch_size = n, batch_size
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 6, generator=g)
        self.x[:, 0] = torch.arange(n, dtype=torch.float32)
        self.y = torch.randint(0, 3, (n,), generator=g)

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def epoch(self, epoch: int):
        order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(epoch))
        for lo in range(0, self.num_samples, self.batch_size):
            idx = order[lo:lo + self.batch_size]
            yield self.x[idx], self.y[idx]


class _Counting(nn.Module):
    """Counts (in buffers, so compiled and eager steps both count) the samples it trains on."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 3)
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("pow2", torch.zeros((), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.count += x.shape[0]
            self.pow2 += torch.exp2(x[:, 0].double()).sum()
        return self.fc(x[:, 1:])


def _train_counting(plan: SpeedPlan | None, epochs: int = 2):
    n, bs = 10, 4  # batches 4, 4, 2
    torch.manual_seed(0)
    model = _Counting()
    loaders = Loaders(_IndexLoader(n, bs), None, _IndexLoader(n, bs), 3, "fp32", plan)
    state = train(model, loaders, TrainCfg(epochs=epochs, lr="0:0.05"), phase="pretrain")
    return model, state, n


def _compile_plan() -> SpeedPlan:
    plan = resolve_speed(SpeedCfg(compile="on"), torch.device("cpu"), 100)
    assert plan.compile
    return plan


def _skip_if_compile_failed(plan: SpeedPlan) -> None:
    failed = [n for n in plan.notes if n.startswith("compile: failed")]
    if failed:  # the fallback itself worked (training finished); the equivalence is moot
        pytest.skip(f"torch.compile unavailable in this environment: {failed[0]}")


def test_every_sample_seen_once_per_epoch_eager():
    model, state, n = _train_counting(None)
    assert model.count.item() == 2 * n
    assert model.pow2.item() == 2 * (2**n - 1)


def test_every_sample_seen_once_per_epoch_compiled_partial_batch_eager():
    """Full batches take the compiled step, the partial last batch the eager one: every
    sample once per epoch, no recompile for the odd shape."""
    plan = _compile_plan()
    model, state, n = _train_counting(plan, epochs=2)
    _skip_if_compile_failed(plan)
    assert model.count.item() == 2 * n
    assert model.pow2.item() == 2 * (2**n - 1)  # each index exactly once per epoch
    assert state.history[0]["compile_seconds"] > 0
    assert all("compile_seconds" in row for row in state.history)
    eager_model, eager_state, _ = _train_counting(None, epochs=2)
    for a, b in zip(state.history, eager_state.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)


def test_compiled_mlp_run_matches_eager(tmp_path):
    eager = prunebench.run(_recipe(compile="off"), out=tmp_path / "eager")
    compiled = prunebench.run(_recipe(compile="on"), out=tmp_path / "compiled")
    speed = compiled.result["speed"]
    failed = [n for n in speed["notes"] if n.startswith("compile: failed")]
    if failed:
        pytest.skip(f"torch.compile unavailable in this environment: {failed[0]}")
    assert eager.id == compiled.id
    assert speed["used"]["compile"] is True and speed["used"]["compile_mode"] == "default"
    assert compiled.test_acc == pytest.approx(eager.test_acc, abs=0.5)
    rows_e = [m for m in eager.metrics() if m["phase"] == "pretrain"]
    rows_c = [m for m in compiled.metrics() if m["phase"] == "pretrain"]
    for a, b in zip(rows_e, rows_c, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4, abs=1e-6)
        assert b["val_acc"] == pytest.approx(a["val_acc"], abs=0.5)
    assert rows_c[0]["compile_seconds"] > 0  # reported apart from the epoch time
    assert "compile_seconds" not in rows_e[0]


def test_failed_compile_falls_back_to_eager_and_is_recorded(monkeypatch):
    def broken(fn, **kwargs):
        def call(*args, **kw):
            raise RuntimeError("no compiler here")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    plan = _compile_plan()
    model, state, n = _train_counting(plan)
    assert model.count.item() == 2 * n  # the failed step was redone eagerly, nothing lost
    assert plan.compile is False
    assert any("no compiler here" in note for note in plan.notes)
    assert plan.record()["used"]["compile"] is False


def test_resume_with_other_layout_and_fused():
    """A checkpoint's optimiser state from a fused / channels_last run resumes plain."""
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    x = torch.randint(0, 256, (24, 3, 8, 8), dtype=torch.uint8)
    y = torch.randint(0, 3, (24,))
    ld = BatchLoader(x, y, batch_size=8, mean=(0.5,) * 3, std=(0.2,) * 3, shuffle=True)
    fast = SpeedPlan(channels_last=True, fused_sgd=True)
    cfg = TrainCfg(epochs=2, lr="0:0.05")
    s1 = train(conv, Loaders(ld, None, ld, 3, "fp32", fast), cfg, phase="p", stop_at=1)
    assert conv[0].weight.is_contiguous()  # layout restored after the stage
    s2 = train(conv, Loaders(ld, None, ld, 3, "fp32", None), cfg, phase="p",
               state=TrainState(s1.epoch, s1.history, s1.optimizer))
    assert s2.epoch == 2 and math.isfinite(s2.history[-1]["train_loss"])
