from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from prunebench.models import build_model
from prunebench.trainability import (
    JSVStats,
    jacobian_singular_values,
    jsv,
    jsv_inputs,
    layer_isometry,
    trainability_accuracy,
)

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:TF32 acceleration:UserWarning")


@pytest.fixture(autouse=True)
def _exact_conv():
    """Compare with float64 on the native kernels: with oneDNN (the CPU default) float32
    ResNet-20's input gradient is up to 2% off float64 in single entries (the row-by-row
    float32 loop too; not with Softplus for ReLU, so ReLU gates near zero flip), which moves
    its singular values by ~3e-4. test_vmap_matches_the_float32_loop_on_the_default_backend
    covers the default backend."""
    with torch.backends.mkldnn.flags(enabled=False):
        yield


CIFAR = {"in_channels": 3, "num_classes": 10, "input_size": (32, 32)}


def _model(name: str, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    shape = {**CIFAR, **kwargs.pop("shape", {})}
    model = build_model(name, **shape, **kwargs)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # BN that is not the identity, so eval mode is a real test
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
                m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                m.bias.copy_(0.1 * torch.randn(c, generator=gen))
    return model


def _inputs(n: int, shape: tuple[int, ...] = (3, 32, 32), seed: int = 0) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def _reference(model: nn.Module, x: torch.Tensor, mode: str = "eval", summed: bool = False):
    """Brute force in float64: autograd row by row (loop over samples and classes).

    Train mode runs the whole batch (BatchNorm batch statistics) and keeps sample b's block
    of d y[b, c] / d X, or with ``summed`` the authors' d (sum_b' y[b', c]) / d X.
    """
    ref = copy.deepcopy(model).double().train(mode == "train")
    xs = x.double().clone().requires_grad_(True)
    y = ref(xs)
    n, c = y.shape
    svs = []
    for b in range(n):
        rows = []
        for k in range(c):
            out = y[:, k].sum() if summed else y[b, k]
            (g,) = torch.autograd.grad(out, xs, retain_graph=True)
            rows.append(g[b].reshape(-1))
        svs.append(torch.linalg.svdvals(torch.stack(rows)))
    return torch.stack(svs)


def _assert_close(s: torch.Tensor, ref: torch.Tensor) -> None:
    assert s.dtype == torch.float32
    assert s.shape == ref.shape
    torch.testing.assert_close(
        s.double(), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item(), check_dtype=False
    )


@pytest.mark.parametrize(
    ("name", "kwargs", "n"),
    [
        ("mlp", {"depth": 3, "width": 16, "shape": {"in_channels": 1, "input_size": (8, 8)}}, 4),
        ("lenet5", {}, 3),
        ("resnet20", {}, 3),
    ],
)
def test_eval_matches_bruteforce(name, kwargs, n):
    shape = kwargs.get("shape", {})
    model = _model(name, **kwargs)
    x = _inputs(n, (shape.get("in_channels", 3), *shape.get("input_size", (32, 32))))
    s = jacobian_singular_values(model, x)
    _assert_close(s, _reference(model, x))
    assert s.shape == (n, 10)


def _loop32(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The TPP-style baseline in float32 on the default backend: one backward per class."""
    xs = x.clone().requires_grad_(True)
    y = model.eval()(xs)
    rows = [torch.autograd.grad(y[:, k].sum(), xs, retain_graph=True)[0] for k in range(10)]
    return torch.linalg.svdvals(torch.stack(rows, 1).reshape(len(x), 10, -1))


def test_vmap_matches_the_float32_loop_on_the_default_backend():
    model = _model("resnet20")
    x = _inputs(3)
    with torch.backends.mkldnn.flags(enabled=True):
        s = jacobian_singular_values(model, x)
        ref = _loop32(model, x)
    torch.testing.assert_close(s, ref, rtol=2e-5, atol=2e-5 * ref.max().item())


def test_train_mode_is_the_diagonal_block_with_batch_statistics():
    model = _model("resnet20")
    x = _inputs(3)
    s = jacobian_singular_values(model, x, mode="train")
    ref = _reference(model, x, mode="train")
    _assert_close(s, ref)
    # batch statistics really matter here: eval mode gives different numbers
    assert not torch.allclose(s.double(), _reference(model, x, mode="eval"), rtol=1e-2)


def test_batched_method_is_the_authors_computation():
    model = _model("resnet20")
    x = _inputs(3)
    s = jacobian_singular_values(model, x, mode="train", method="batched")
    _assert_close(s, _reference(model, x, mode="train", summed=True))
    # without coupling (eval mode) it equals the per-sample Jacobian
    s_eval = jacobian_singular_values(model, x, method="batched")
    _assert_close(s_eval, _reference(model, x))


def test_mlp7_linear_matches_the_weight_product():
    shape = {"in_channels": 1, "num_classes": 10, "input_size": (8, 8)}
    torch.manual_seed(3)
    model = build_model("mlp7_linear", **shape)
    prod = model.fc1.weight.detach().double()
    for i in range(2, 8):
        prod = getattr(model, f"fc{i}").weight.detach().double() @ prod
    expected = torch.linalg.svdvals(prod)
    x = _inputs(5, (1, 8, 8))
    s = jacobian_singular_values(model, x)
    assert s.shape == (5, 10)
    for row in s:  # same Jacobian for every sample
        torch.testing.assert_close(row.double(), expected, rtol=1e-4, atol=1e-4 * expected[0])
    stats = jsv(model, x)
    assert stats.mean == pytest.approx(expected.mean().item(), rel=1e-4)


def test_auto_uses_forward_mode_when_inputs_are_narrower_than_the_classes():
    model = _model("mlp", depth=3, width=16, shape={"in_channels": 1, "input_size": (2, 2)})
    x = _inputs(4, (1, 2, 2))
    s = jacobian_singular_values(model, x)
    assert s.shape == (4, 4)  # min(num_classes=10, input_dim=4)
    ref = _reference(model, x)
    _assert_close(s, ref)
    _assert_close(jacobian_singular_values(model, x, method="jacrev"), ref)
    _assert_close(jacobian_singular_values(model, x, method="jacfwd", mode="train"), ref)


def test_chunking_does_not_change_the_result():
    model = _model("lenet5")
    x = _inputs(5)
    whole = jacobian_singular_values(model, x)
    torch.testing.assert_close(jacobian_singular_values(model, x, chunk_size=2), whole)
    bn = _model("resnet20")
    x = _inputs(3)
    whole = jacobian_singular_values(bn, x, mode="train")
    chunked = jacobian_singular_values(bn, x, mode="train", chunk_size=1)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("method", ["auto", "batched"])
def test_model_is_left_untouched(mode, method):
    model = _model("resnet20")
    model.train()
    model.layer2.eval()  # mixed flags must come back as they were
    model.fc.weight.requires_grad_(False)
    flags = {name: m.training for name, m in model.named_modules()}
    state = copy.deepcopy(model.state_dict())
    x = _inputs(2)
    x_before = x.clone()
    jsv(model, x, mode=mode, method=method)
    assert {name: m.training for name, m in model.named_modules()} == flags
    after = model.state_dict()
    for key, value in state.items():  # params, running stats, num_batches_tracked
        assert torch.equal(after[key], value), key
    for name, p in model.named_parameters():
        assert p.grad is None, name
        assert p.requires_grad == (name != "fc.weight")
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert torch.equal(x, x_before)
    assert not x.requires_grad


def test_works_under_no_grad():
    model = _model("lenet5")
    x = _inputs(2)
    with torch.no_grad():
        s = jacobian_singular_values(model, x)
    _assert_close(s, _reference(model, x))


def test_jsv_stats_are_consistent():
    stats = jsv(_model("lenet5"), _inputs(4))
    assert isinstance(stats, JSVStats)
    assert stats.n_samples == 4
    assert stats.mode == "eval"
    assert stats.min <= stats.mean <= stats.max
    assert stats.cv == pytest.approx(stats.std / stats.mean)
    assert stats.cond_mean >= 1
    d = stats.to_dict()
    assert set(d) == {
        "mean", "std", "cv", "min", "max", "cond_mean", "sq_dev_mean", "n_samples", "mode"
    }  # fmt: skip
    assert jsv(_model("lenet5"), _inputs(2), mode="train").mode == "train"


def test_jsv_stats_by_hand():
    s = torch.tensor([[2.0, 1.0], [4.0, 1.0]])
    st = JSVStats.from_singular_values(s, "eval")
    assert st.mean == 2.0
    assert st.std == pytest.approx(math.sqrt(1.5))  # population std of 2, 1, 4, 1
    assert st.cv == pytest.approx(math.sqrt(1.5) / 2)
    assert (st.min, st.max) == (1.0, 4.0)
    assert st.cond_mean == pytest.approx(3.0)  # (2/1 + 4/1) / 2
    assert st.sq_dev_mean == pytest.approx(2.5)  # (1 + 0 + 9 + 0) / 4
    rank_deficient = JSVStats.from_singular_values(torch.tensor([[1.0, 0.0]]), "eval")
    assert rank_deficient.cond_mean == math.inf


def test_bad_arguments():
    model = _model("lenet5")
    with pytest.raises(ValueError, match="mode"):
        jsv(model, _inputs(2), mode="test")
    with pytest.raises(ValueError, match="method"):
        jsv(model, _inputs(2), method="loop")
    with pytest.raises(TypeError, match="floating"):
        jsv(model, torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="chunk_size"):
        jsv(model, _inputs(2), chunk_size=0)


def test_jsv_inputs_is_a_deterministic_subset():
    x = torch.arange(100 * 3, dtype=torch.float32).reshape(100, 3)
    rng_before = torch.get_rng_state()
    a = jsv_inputs(x, n=8)
    assert torch.equal(torch.get_rng_state(), rng_before)
    torch.manual_seed(123)  # the global seed does not matter
    assert torch.equal(jsv_inputs(x, n=8), a)
    assert a.shape == (8, 3)
    rows = (a[:, 0] / 3).long()
    assert torch.equal(x[rows], a)
    assert rows.unique().numel() == 8
    assert not torch.equal(jsv_inputs(x, n=8, seed=1), a)
    assert torch.equal(jsv_inputs(x, n=500), x)
    with pytest.raises(ValueError):
        jsv_inputs(x, n=0)


def _orthogonal(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    a = torch.randn(max(rows, cols), min(rows, cols), generator=torch.Generator().manual_seed(seed))
    q = torch.linalg.qr(a).Q
    return q if rows >= cols else q.T


def test_layer_isometry_of_orthogonal_weights():
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3),  # 4 x 18: orthonormal rows
        nn.Flatten(),
        nn.Linear(6, 6),  # square
        nn.Linear(6, 12),  # 12 x 6: orthonormal columns -> W^T W
        nn.Linear(12, 3),
    )
    with torch.no_grad():
        model[0].weight.copy_(_orthogonal(4, 18).reshape(4, 2, 3, 3))
        model[2].weight.copy_(_orthogonal(6, 6, seed=1))
        model[3].weight.copy_(_orthogonal(12, 6, seed=2))
        model[4].weight.copy_(2 * _orthogonal(3, 12, seed=3))
    iso = layer_isometry(model)
    assert list(iso) == ["0", "2", "3", "4"]
    for name in ("0", "2", "3"):
        for key in ("sv_mean", "sv_min", "sv_max"):
            assert iso[name][key] == pytest.approx(1.0, abs=1e-6), (name, key)
        assert iso[name]["orth_dev"] == pytest.approx(0.0, abs=1e-6), name
    assert iso["4"]["sv_min"] == pytest.approx(2.0, abs=1e-6)
    assert iso["4"]["orth_dev"] == pytest.approx(3 * 3 / 9, abs=1e-6)  # |4I - I| over 3x3
    names = set(layer_isometry(build_model("resnet20", **CIFAR)))
    assert {"conv1", "layer1.0.conv1", "layer3.2.conv2", "fc"} <= names


def _history() -> list[dict]:
    rows = [{"phase": "pretrain", "epoch": e, "test_acc": 10.0} for e in (1, 2, 3)]
    rows.append({"phase": "prune", "epoch": 0, "test_acc": 5.0})
    rows += [{"phase": "retrain", "epoch": e, "test_acc": 50.0 + e} for e in (1, 2, 3, 4)]
    return rows


def test_trainability_accuracy():
    h = _history()
    assert trainability_accuracy(h, 3) == pytest.approx(52.0)  # (51 + 52 + 53) / 3
    assert trainability_accuracy(h, 4) == pytest.approx(52.5)
    assert trainability_accuracy(h, 1) == pytest.approx(51.0)
    assert trainability_accuracy(h, 5) is None  # too short
    assert trainability_accuracy(h[:4], 1) is None  # no retraining at all
    assert trainability_accuracy(h, 2, key="val_acc") is None
    no_phase = [{"epoch": e, "test_acc": float(e)} for e in (1, 2)]
    assert trainability_accuracy(no_phase, 2) == pytest.approx(1.5)
    resumed = [*h, {"phase": "retrain", "epoch": 2, "test_acc": 70.0}]
    assert trainability_accuracy(resumed, 2) == pytest.approx((51 + 70) / 2)
    with pytest.raises(ValueError):
        trainability_accuracy(h, 0)


def test_trainability_accuracy_from_a_start_epoch():
    h = _history()  # retrain epochs 1..4 at 51..54
    assert trainability_accuracy(h, 2, start=1) == pytest.approx(52.5)  # epochs 2, 3
    assert trainability_accuracy(h, 1, start=3) == pytest.approx(54.0)
    assert trainability_accuracy(h, 2, start=3) is None  # epoch 5 is missing
    assert trainability_accuracy(h, 3, start=0) == trainability_accuracy(h, 3)
    with pytest.raises(ValueError, match="start"):
        trainability_accuracy(h, 1, start=-1)


def _ta_epochs(lr: str, epochs: int, **measure) -> int:
    from types import SimpleNamespace

    from prunebench.recipe import MeasureCfg
    from prunebench.schedule import parse_schedule
    from prunebench.stages import ta_epochs

    ctx = SimpleNamespace(recipe=SimpleNamespace(measure=MeasureCfg(**measure)))
    return ta_epochs(ctx, SimpleNamespace(schedule=parse_schedule(lr), epochs=epochs))


def test_ta_epochs_rules():
    # step: until the LR first changes, after warm-up
    assert _ta_epochs("0:0.01,30:0.01,60:0.001", 120) == 60
    assert _ta_epochs("0:0.01,60:0.001;warmup=5", 120) == 55
    assert _ta_epochs("0:0.01;warmup=5", 20) == 15
    # cosine: ceil(fraction * epochs), counted after warm-up, at most the epochs left
    assert _ta_epochs("cosine:0.01:0.0001;warmup=5", 120) == 30
    assert _ta_epochs("cosine:0.01:0.0001", 120, ta_cosine_fraction=0.1) == 12
    assert _ta_epochs("cosine:0.01:0;warmup=10", 12) == 2
    # measure.ta_epochs overrides N, still counted after warm-up
    assert _ta_epochs("0:0.01,60:0.001;warmup=5", 120, ta_epochs=10) == 10
    assert _ta_epochs("0:0.01,60:0.001;warmup=5", 12, ta_epochs=10) == 7
    # warm-up takes every epoch: nothing to measure
    assert _ta_epochs("0:0.01;warmup=5", 5) == 0


def test_run_records_the_epochs_ta_covers(tiny_recipe, tmp_path):
    import prunebench

    res = prunebench.run(
        tiny_recipe, tmp_path,
        overrides=["retrain.epochs=4", "retrain.lr=0:0.01,2:0.01,3:0.001;warmup=1"],
    )
    ta = res.result["ta"]
    acc = {m["epoch"]: m["test_acc"] for m in res.metrics() if m["phase"] == "retrain"}
    assert (ta["start"], ta["epochs"]) == (1, 2)  # epochs 2 and 3 (1-based): LR 0.01
    assert ta["test"] == pytest.approx((acc[2] + acc[3]) / 2)
    assert ta["val"] is not None
