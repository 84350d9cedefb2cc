"""Stacked training is exact: k fused copies == k separate ``train()`` runs (float64, CPU)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from prunebench.data import BatchLoader
from prunebench.data.synthetic import synthetic
from prunebench.models import build_model
from prunebench.recipe import TrainCfg
from prunebench.stack import (
    StackedModel,
    StackError,
    can_stack,
    group_stackable,
    stack_problems,
    train_stacked,
)
from prunebench.train import Loaders, StepHooks, TrainState, train

REL = 1e-6
EPOCHS = 3

# per copy: LR schedule, weight decay, momentum, nesterov, data seed (copies 0 and 2 share one)
COPIES = [
    ("0:0.05,2:0.01", 5e-4, 0.9, False, 0),
    ("cosine:0.02:0.001", 0.0, 0.0, False, 1),
    ("0.03;warmup=2", 1e-3, 0.8, True, 0),
]


class F64:
    """A Loader yielding float64 images (the model runs in float64); remembers the last y."""

    def __init__(self, inner: BatchLoader) -> None:
        self.inner = inner
        self.num_samples = inner.num_samples
        self.last_y: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.inner)

    def epoch(self, epoch: int):
        for x, y in self.inner.epoch(epoch):
            self.last_y = y
            yield x.double(), y


def make_loaders(size: int, channels: int, seeds: list[int], *, n_train: int = 40,
                 batch: int = 16) -> list[Loaders]:
    """One Loaders per copy; copies with equal seeds share the train loader object."""
    ds = synthetic(n_train=n_train + 12, n_test=20, channels=channels, size=size, num_classes=4)
    common = {"mean": ds.mean, "std": ds.std}
    x, y = ds.train_x, ds.train_y
    val = F64(BatchLoader(x[n_train:], y[n_train:], batch_size=8, **common))
    test = F64(BatchLoader(ds.test_x, ds.test_y, batch_size=8, **common))
    trains = {s: F64(BatchLoader(x[:n_train], y[:n_train], batch_size=batch, shuffle=True,
                                 seed=s, **common)) for s in sorted(set(seeds))}
    return [Loaders(trains[s], val, test, ds.num_classes) for s in seeds]


def make_models(name: str, size: int, channels: int, k: int, **kwargs) -> list[torch.nn.Module]:
    models = []
    for i in range(k):
        torch.manual_seed(100 + i)  # each copy its own initial weights
        models.append(build_model(name, in_channels=channels, num_classes=4,
                                  input_size=(size, size), **kwargs).double())
    return models


def cfgs_for(copies) -> list[TrainCfg]:
    return [TrainCfg(epochs=EPOCHS, lr=lr, weight_decay=wd, momentum=m, nesterov=nes)
            for lr, wd, m, nes, _ in copies]


def reference(model, loaders: Loaders, cfg: TrainCfg) -> tuple[TrainState, list[float]]:
    """``prunebench.train.train`` itself, with its per-step training losses recorded."""
    losses: list[float] = []
    ld = loaders.train

    def hook(module, _inp, out):
        if module.training:  # the training forward (evaluation runs in eval mode)
            losses.append(F.cross_entropy(out.float(), ld.last_y).item())

    handle = model.register_forward_hook(hook)
    try:
        state = train(model, loaders, cfg, phase="retrain")
    finally:
        handle.remove()
    return state, losses


def close(a: float, b: float, rel: float = REL) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)


def check_stack_matches(name: str, size: int, channels: int, copies, **kwargs) -> None:
    k = len(copies)
    loaders = make_loaders(size, channels, [c[4] for c in copies])
    cfgs = cfgs_for(copies)
    models = make_models(name, size, channels, k, **kwargs)
    refs = [copy.deepcopy(m) for m in models]

    steps: list[list[float]] = []
    states = train_stacked(models, loaders, cfgs, phase="retrain",
                           on_step=lambda _s, losses: steps.append(losses.tolist()))
    n_steps = EPOCHS * len(loaders[0].train)
    assert len(steps) == n_steps

    for i in range(k):
        ref_state, ref_losses = reference(refs[i], loaders[i], cfgs[i])
        assert len(ref_losses) == n_steps
        for s, want in enumerate(ref_losses):
            got = steps[s][i]
            assert close(got, want), f"copy {i} step {s}: stacked {got} vs separate {want}"
        # history rows: same keys (plus "stack"), same values
        assert states[i].epoch == ref_state.epoch == EPOCHS
        for got_row, want_row in zip(states[i].history, ref_state.history, strict=True):
            assert got_row["stack"] == k
            assert set(got_row) - {"stack"} == set(want_row)
            for key, want in want_row.items():
                if "seconds" in key:
                    continue
                got = got_row[key]
                if isinstance(want, float):
                    assert close(got, want, 1e-4), f"copy {i} {key}: {got} vs {want}"
                else:
                    assert got == want, f"copy {i} {key}: {got} vs {want}"
        # final weights and BatchNorm buffers, written back into each module
        got_sd, want_sd = models[i].state_dict(), refs[i].state_dict()
        assert list(got_sd) == list(want_sd)
        for key, want in want_sd.items():
            got = got_sd[key]
            if want.is_floating_point():
                torch.testing.assert_close(got, want, rtol=REL, atol=1e-9, msg=f"copy {i} {key}")
            else:
                assert torch.equal(got, want), f"copy {i} {key}"
        # optimiser state: same layout as train()'s, same momentum buffers
        got_opt, want_opt = states[i].optimizer, ref_state.optimizer
        assert got_opt["param_groups"] == want_opt["param_groups"]
        assert set(got_opt["state"]) == set(want_opt["state"])
        for idx, st in want_opt["state"].items():
            torch.testing.assert_close(got_opt["state"][idx]["momentum_buffer"],
                                       st["momentum_buffer"], rtol=REL, atol=1e-9)


def test_mlp_stacked_equals_separate() -> None:
    check_stack_matches("mlp", 6, 1, COPIES, depth=3, width=16)


def test_lenet5_stacked_equals_separate() -> None:
    check_stack_matches("lenet5", 16, 1, COPIES)


def test_resnet20_option_a_stacked_equals_separate() -> None:
    # BatchNorm statistics per copy; PadShortcut (option A) on 8x8 inputs; 2 data orders
    check_stack_matches("resnet20", 8, 3, COPIES)


def test_shared_batches_and_bn_eval_mode() -> None:
    """Same data order for all copies (one shared batch); BN buffers used in eval mode."""
    copies = [(lr, wd, 0.9, False, 7) for lr, wd in (("0.05", 5e-4), ("0.01", 0.0))]
    loaders = make_loaders(8, 3, [c[4] for c in copies], n_train=24, batch=12)
    assert loaders[0].train is loaders[1].train
    models = make_models("resnet20", 8, 3, 2)
    before = [m.bn1.running_var.clone() for m in models]
    refs = [copy.deepcopy(m) for m in models]
    states = train_stacked(models, loaders, cfgs_for(copies), phase="retrain")
    for i in range(2):
        ref_state, _ = reference(refs[i], loaders[i], cfgs_for(copies)[i])
        for got, want in zip(states[i].history, ref_state.history, strict=True):
            assert close(got["train_loss"], want["train_loss"])
            assert close(got["test_loss"], want["test_loss"], 1e-4)
        torch.testing.assert_close(models[i].state_dict(), refs[i].state_dict(),
                                   rtol=REL, atol=1e-9)
        assert not torch.equal(models[i].bn1.running_var, before[i])  # stats were updated
        assert int(models[i].bn1.num_batches_tracked) == EPOCHS * len(loaders[i].train)
    # the fused eval forward uses each copy's running statistics (not the batch's)
    net = StackedModel(models)
    x = next(iter(loaders[0].test.epoch(0)))[0]
    with torch.no_grad():
        fused = net.forward(x, shared=True, train=False)
        for i, m in enumerate(models):
            m.eval()
            torch.testing.assert_close(fused[i], m(x), rtol=1e-12, atol=1e-12)
            m.train()
            assert not torch.allclose(fused[i], m(x))  # batch statistics would differ


def test_resume_matches_uninterrupted() -> None:
    copies = COPIES[:2]
    loaders = make_loaders(6, 1, [c[4] for c in copies])
    cfgs = cfgs_for(copies)
    a = make_models("mlp", 6, 1, 2, depth=2, width=8)
    b = [copy.deepcopy(m) for m in a]
    full = train_stacked(a, loaders, cfgs, phase="retrain")
    saved: list[dict] = [{}, {}]

    def keep(i):
        def save(state, model, _opt):
            saved[i] = {"state": state, "model": copy.deepcopy(model.state_dict())}
        return save

    part = train_stacked(b, loaders, cfgs, phase="retrain", stop_at=2,
                         on_epoch_end=[keep(0), keep(1)])
    assert [s.epoch for s in part] == [2, 2]
    assert saved[0]["state"] is part[0]
    fresh = make_models("mlp", 6, 1, 2, depth=2, width=8)
    for m, s in zip(fresh, saved, strict=True):
        m.load_state_dict(s["model"])
    done = train_stacked(fresh, loaders, cfgs, phase="retrain", states=[s["state"] for s in saved])
    for i in range(2):
        assert [r["train_loss"] for r in done[i].history] == [
            r["train_loss"] for r in full[i].history]
        torch.testing.assert_close(fresh[i].state_dict(), a[i].state_dict(), rtol=0, atol=0)


def test_stack_problems_say_why() -> None:
    loaders = make_loaders(6, 1, [0, 0])
    cfgs = cfgs_for(COPIES[:2])
    mlps = make_models("mlp", 6, 1, 2, depth=2, width=8)
    assert stack_problems(mlps, loaders, cfgs) == []
    assert can_stack(mlps, loaders, cfgs) == (True, "")

    wider = make_models("mlp", 6, 1, 1, depth=2, width=9)[0]
    ok, why = can_stack([mlps[0], wider], loaders, cfgs)
    assert not ok and "architecture" in why and "fc1" in why

    longer = [cfgs[0], cfgs[1].model_copy(update={"epochs": 4})]
    assert any("epochs" in p for p in stack_problems(mlps, loaders, longer))

    other = make_loaders(6, 1, [0], n_train=32)[0]
    assert any("batches per epoch" in p for p in stack_problems(mlps, [loaders[0], other], cfgs))

    with pytest.raises(StackError, match="hooks"):
        train_stacked(mlps, loaders, cfgs, phase="retrain", hooks=[StepHooks(), None])

    members = [(mlps[0], cfgs[0], loaders[0]), (wider, cfgs[0], loaders[0]),
               (mlps[1], cfgs[1], loaders[1])]
    assert group_stackable(members) == [[0, 2], [1]]
    assert group_stackable(members, max_k=1) == [[0], [1], [2]]


def test_no_weight_decay_all_nesterov() -> None:
    """The fused step's other branches: no copy with weight decay, every copy Nesterov."""
    copies = [("0.05", 0.0, 0.9, True, 3), ("0.02", 0.0, 0.5, True, 4)]
    check_stack_matches("mlp", 6, 1, copies, depth=2, width=8)


def test_divergence_is_per_copy() -> None:
    """A copy that diverges is reported as train() would raise it; the others train on."""
    from prunebench.errors import TrainingDiverged

    copies = [("0.05", 5e-4, 0.9, False, 0), ("0:0.05,1:1e12", 0.0, 0.9, False, 1)]
    loaders = make_loaders(6, 1, [c[4] for c in copies])
    cfgs = cfgs_for(copies)
    models = make_models("mlp", 6, 1, 2, depth=2, width=8)
    refs = [copy.deepcopy(m) for m in models]
    saved: list[int] = []
    out = train_stacked(models, loaders, cfgs, phase="retrain",
                        on_epoch_end=[None, lambda st, _m, _o: saved.append(st.epoch)])
    with pytest.raises(TrainingDiverged) as want:
        train(refs[1], loaders[1], cfgs[1], phase="retrain")
    got = out[1]
    assert isinstance(got, TrainingDiverged)
    assert (got.epoch, got.reason) == (want.value.epoch, want.value.reason)
    assert saved == list(range(1, got.epoch))  # no checkpoint of the diverged epoch
    assert len(got.history) == len(want.value.history) == got.epoch - 1
    ref_state = train(refs[0], loaders[0], cfgs[0], phase="retrain")
    assert isinstance(out[0], TrainState) and out[0].epoch == EPOCHS
    assert [r["train_loss"] for r in out[0].history] == [
        r["train_loss"] for r in ref_state.history]
    torch.testing.assert_close(models[0].state_dict(), refs[0].state_dict(),
                               rtol=REL, atol=1e-9)
