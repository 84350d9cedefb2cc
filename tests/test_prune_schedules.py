"""The prune-schedule registry: per-schedule recipe fields, the GReg/TPP stopping rule and
budget check, data for data-driven criteria, and a schedule added by one registration."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import prunebench
from prunebench.errors import PruningError, RecipeError, RegistryError
from prunebench.pruning import CRITERIA, register_criterion
from prunebench.pruning.context import _NEEDS_DATA, criterion_needs_data
from prunebench.pruning.schedules import (
    PRUNE_SCHEDULES,
    PhasePlan,
    PruneSchedule,
    register_schedule,
    schedule_for,
)
from prunebench.recipe import build_recipe
from prunebench.record import Segment

# tests/fixtures/tiny.yaml: 512 synthetic images - 128 validation = 384 training images, batch 64
STEPS_PER_EPOCH = 6
NO_RETRAIN = "retrain=null"


def run(tiny, out, *overrides):
    return prunebench.run(tiny, out=out, overrides=[NO_RETRAIN, *overrides])


def greg(*more: str) -> list[str]:
    return ["prune.schedule=greg", "prune.lr=0:0.01", *more]


def _unregister(registry, name: str) -> None:
    for table in ("_items", "_docs", "_code"):
        getattr(registry, table, {}).pop(name, None)


def files_under(path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


# ----------------------------------------------------------------------- registry, fields


def test_every_schedule_is_one_registered_entry():
    assert PRUNE_SCHEDULES.names() == [
        "filter/greg", "filter/oneshot", "filter/tpp", "weight/imp", "weight/oneshot",
    ]
    for key in PRUNE_SCHEDULES.names():
        entry = PRUNE_SCHEDULES.get(key)
        assert isinstance(entry, PruneSchedule) and PRUNE_SCHEDULES.doc(key)
    cfg = build_recipe({"prune": {"schedule": "tpp", "lr": "0:0.01"}}).prune
    assert schedule_for(cfg) is PRUNE_SCHEDULES.get("filter/tpp")


@pytest.mark.parametrize(
    ("prune", "message"),
    [
        ({"rounds": 3}, "prune.rounds=3 is not used by schedule 'oneshot'"),
        ({"schedule": "greg", "lr": "0:0.1", "scheme": "global"},
         "prune.scheme='global' is not used by schedule 'greg'"),
        ({"schedule": "greg", "lr": "0:0.1", "tpp_gram_weight": 10.0},
         "prune.tpp_gram_weight=10.0 is not used by schedule 'greg'.*used by tpp"),
        ({"schedule": "tpp", "lr": "0:0.1", "reg_bias_bn": True},
         "prune.reg_bias_bn=True is not used by schedule 'tpp'"),
        ({"epochs": 5}, "prune.epochs=5 is not used by schedule 'oneshot'.*used by greg, tpp"),
        ({"stabilize_interval": 5}, "prune.stabilize_interval=5 is not used"),
        ({"batches": 8}, "prune.batches=8 is only read by data-driven criteria"),
        ({"schedule": "greg"}, "needs prune.lr"),
        ({"schedule": "imp"}, "'imp' needs prune.granularity weight"),
        ({"schedule": "nope"}, "unknown prune.schedule 'nope'; registered: greg, imp, oneshot"),
        ({"granularity": "weight", "method": "random", "schedule": "imp", "layers": 0.5},
         "'imp' prunes by magnitude"),
        ({"granularity": "weight", "method": "l1"}, "allowed magnitude, random"),
        ({"granularity": "weight", "method": "magnitude", "layers": "fc1:0.5"},
         "one sparsity in"),
    ],
)
def test_fields_a_schedule_does_not_use_must_stay_at_their_defaults(prune, message):
    with pytest.raises(RecipeError, match=message) as exc:
        build_recipe({"prune": prune})
    assert "\n" not in str(exc.value)


def test_new_fields_keep_old_ids():
    base = build_recipe({"prune": {"schedule": "greg", "lr": "0:0.01", "epochs": 30}})
    assert set(base.identity()["prune"]) == {"schedule", "lr", "epochs"}
    # the old "unset" 0 still means unset (and a one-shot recipe with it keeps its id)
    assert build_recipe({"prune": {"epochs": 0}}).short_hash() == build_recipe({}).short_hash()
    assert build_recipe({"prune": {"schedule": "greg", "lr": "0:0.01"}}).prune.epochs is None


# ------------------------------------------------------------------- GReg / TPP phase rule


def test_phase_plan_numbers():
    plan = PhasePlan(steps_per_epoch=6, steps_to_ceiling=100, stabilize_interval=10,
                     max_epochs=None)
    assert (plan.steps_needed, plan.epochs) == (111, 19)
    cfg = build_recipe({"prune": {"schedule": "greg", "lr": "0:0.01", "epochs": 18}}).prune
    with pytest.raises(RecipeError) as exc:
        PhasePlan(6, 100, 10, max_epochs=18).check_budget("greg", cfg)
    msg = str(exc.value)
    assert "\n" not in msg
    for part in ("prune.epochs=18", "111 steps", "at step 100", "18 epochs x 6 steps/epoch = 108",
                 "prune.epochs >= 19"):
        assert part in msg, (part, msg)
    PhasePlan(6, 100, 10, max_epochs=19).check_budget("greg", cfg)  # exactly enough
    with pytest.raises(PruningError, match="after 18 epochs = 108 steps.*111 steps needed"):
        plan.outcome("greg", 18)
    rec = plan.outcome("greg", 19)
    assert rec["reg_finished"] and rec["steps"] == 114 and rec["stabilize_steps"] == 13


def test_budget_too_small_is_refused_before_anything_is_written(tiny_recipe, tmp_path):
    # Before: the phase trained its 2 epochs (12 steps, lam 0.11 of 1.0), removed the
    # filters anyway and stored the run with reg_finished false.
    with pytest.raises(RecipeError) as exc:
        run(tiny_recipe, tmp_path, *greg("prune.epochs=2", "prune.reg_granularity=0.01",
                                         "prune.update_interval=1"))
    msg = str(exc.value)
    assert "\n" not in msg
    assert "101 steps" in msg and "at step 100" in msg
    assert "2 epochs x 6 steps/epoch = 12 steps" in msg and "prune.epochs >= 17" in msg
    assert not (tmp_path / "stages").exists()
    assert [f for f in files_under(tmp_path) if not f.startswith("index.sqlite")] == []


@pytest.mark.parametrize(("schedule", "stabilize"), [("greg", 0), ("tpp", 5)])
def test_phase_stops_at_the_end_of_the_epoch_that_meets_the_rule(
    tiny_recipe, tmp_path, schedule, stabilize
):
    # ceiling at step 20 (+1, + stabilisation): 21 steps -> 4 epochs; 26 -> 5 epochs
    res = run(tiny_recipe, tmp_path, f"prune.schedule={schedule}", "prune.lr=0:0.01",
              "prune.epochs=50", "prune.reg_granularity=0.1", "prune.update_interval=2",
              f"prune.stabilize_interval={stabilize}")
    p = res.result["pruned"]
    epochs = 4 if stabilize == 0 else 5
    assert p["schedule"] == schedule and p["epochs"] == epochs and p["max_epochs"] == 50
    assert p["steps"] == epochs * STEPS_PER_EPOCH and p["steps_per_epoch"] == STEPS_PER_EPOCH
    assert p["steps_to_ceiling"] == 20 and p["stabilize_interval"] == stabilize
    assert p["stabilize_steps"] == p["steps"] - 21 >= stabilize
    assert p["reg_finished"] is True and p["reg_final"] == pytest.approx(1.0)
    assert p["lr"] == "0:0.01" and "val_acc" in p["before_removal"]
    terms = p["regularizer"]
    assert (terms["reg_granularity"], terms["update_interval"]) == (0.1, 2)
    assert terms["penalize_bn"] is (schedule == "tpp")  # greg: weights only by default
    assert res.result["epochs"]["prune"] == epochs
    (stage,) = (tmp_path / "stages").glob("prune-*")
    phase_lines = (stage / "metrics.jsonl").read_text().splitlines()
    assert len(phase_lines) == epochs  # the per-epoch history of the phase
    per_epoch_macs = p["train_macs"] / epochs
    assert per_epoch_macs == 384 * p["macs_dense"] * 3


def test_omitted_budget_trains_as_many_epochs_as_needed(tiny_recipe, tmp_path):
    res = run(tiny_recipe, tmp_path, *greg("prune.reg_granularity=0.25",
                                           "prune.update_interval=3"))
    p = res.result["pruned"]
    # ceiling at step 12 -> 13 steps -> 3 epochs of 6
    assert p.get("max_epochs") is None and p["epochs"] == 3 and p["reg_finished"] is True


def test_an_unfinished_phase_is_never_removed_and_stored(tiny_recipe, tmp_path, monkeypatch):
    import prunebench.stages as stages

    real = stages.train_resumable

    def cut_short(*args, **kwargs):  # as if the phase had ended one epoch early
        cfg = args[2]
        return real(*args, **{**kwargs, "stop_at": cfg.epochs - 1})

    monkeypatch.setattr(stages, "train_resumable", cut_short)
    with pytest.raises(PruningError, match="after 3 epochs = 18 steps.*21 steps needed"):
        run(tiny_recipe, tmp_path, *greg("prune.reg_granularity=0.1", "prune.update_interval=2"))
    prune_dirs = list((tmp_path / "stages").glob("prune-*"))
    assert len(prune_dirs) == 1
    left = files_under(prune_dirs[0])
    assert not {"done.json", "pruned.pt", "structure.json"} & set(left), left


# ------------------------------------------------------------------- GReg / TPP knobs


def _hook(prune: dict, model: nn.Module):
    from prunebench.pruning.regularizers import select_filters

    cfg = build_recipe({"prune": {"lr": "0:0.01", **prune}}).prune
    sel = select_filters(model, {"fc1": 0.5}, "l1")
    return schedule_for(cfg).build_hook(model, sel, cfg)


def test_greg_does_not_touch_bias_or_bn_unless_the_recipe_asks():
    from prunebench.models import build_model

    torch.manual_seed(0)
    model = build_model("mlp", in_channels=1, num_classes=4, input_size=(8, 8), depth=3,
                        width=16)
    default = _hook({"schedule": "greg"}, model)
    assert (default.penalize_bias, default.penalize_bn) == (False, False)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    default.after_backward(model, 10**6)
    assert torch.count_nonzero(model.fc1.bias.grad) == 0
    assert torch.count_nonzero(model.fc1.weight.grad) > 0
    asked = _hook({"schedule": "greg", "reg_bias_bn": True}, model)
    assert (asked.penalize_bias, asked.penalize_bn) == (True, True)
    asked.after_backward(model, 10**6)
    assert torch.count_nonzero(model.fc1.bias.grad) > 0
    # every TPP knob is reachable from the recipe (authors' defaults: 1000, on, on)
    tpp = _hook({"schedule": "tpp"}, model)
    assert (tpp.gram_weight, tpp.weight_l2, tpp.penalize_bn) == (1000.0, True, True)
    tpp = _hook({"schedule": "tpp", "tpp_gram_weight": 7.0, "tpp_weight_l2": False,
                 "tpp_bn_reg": False, "reg_granularity": 0.5, "update_interval": 2,
                 "reg_ceiling": 2.0}, model)
    assert (tpp.gram_weight, tpp.weight_l2, tpp.penalize_bn) == (7.0, False, False)
    assert (tpp.reg_granularity, tpp.update_interval, tpp.reg_ceiling) == (0.5, 2, 2.0)


# ------------------------------------------------------------------- data-driven criteria


@pytest.fixture
def spy_criteria():
    """Two throw-away criteria recording the batches they were given (unregistered after)."""
    seen: dict[str, list] = {"spy_data": [], "spy_nodata": []}

    def make(name):
        def spy(module: nn.Module, ctx) -> torch.Tensor:
            seen[name].append(ctx.batches)
            return module.weight.detach().flatten(1).abs().mean(1)

        return spy

    register_criterion("spy_data", needs_data=True)(make("spy_data"))
    register_criterion("spy_nodata")(make("spy_nodata"))
    yield seen
    for name in seen:
        _unregister(CRITERIA, name)
        _NEEDS_DATA.discard(name)


def test_criteria_declare_whether_they_need_data():
    assert criterion_needs_data("taylor_fo") is True
    for name in ("l1", "l2", "random", "fpgm", "bn_scale"):
        assert criterion_needs_data(name) is False, name
    with pytest.raises(RegistryError, match="unknown criterion 'nope'"):
        criterion_needs_data("nope")


@pytest.mark.parametrize("schedule", ["oneshot", "greg"])
def test_declared_criteria_get_prune_batches_of_data(tiny_recipe, tmp_path, spy_criteria,
                                                     schedule):
    extra = ["prune.lr=0:0.01", "prune.reg_granularity=0.5", "prune.update_interval=1"]
    extra = extra if schedule == "greg" else []
    run(tiny_recipe, tmp_path, "prune.method=spy_data", "prune.batches=3",
        f"prune.schedule={schedule}", *extra)
    run(tiny_recipe, tmp_path, "prune.method=spy_nodata", f"prune.schedule={schedule}", *extra)
    assert spy_criteria["spy_data"] and spy_criteria["spy_nodata"]
    for batches in spy_criteria["spy_data"]:
        assert len(batches) == 3 and batches[0][0].shape[0] == 64
    assert all(b is None for b in spy_criteria["spy_nodata"])


def test_taylor_fo_still_gets_its_data(tiny_recipe, tmp_path):
    res = run(tiny_recipe, tmp_path, "prune.method=taylor_fo", "prune.batches=2")
    assert res.status == "done" and res.result["pruned"]["speedup"] > 1


# ------------------------------------------------------------------- adding a schedule


@pytest.fixture
def toy_schedule():
    """A schedule added by one registration: remove the lowest-index half of fc1."""
    calls: list[tuple] = []

    @register_schedule
    class DropFirstHalf(PruneSchedule):
        """Toy: remove the first half of fc1's neurons (tests only)."""

        name, granularity = "toy_first_half", "filter"
        uses = frozenset({"rounds"})  # borrow a field to show the unused-field rule

        def check(self, ctx, model):
            calls.append(("check", ctx.recipe.prune.rounds))

        def run(self, ctx, store, model, sdir):
            from prunebench.pruning.regularizers import remove_selected

            n = model.fc1.out_features
            calls.append(("run", sdir.name))
            outcome = remove_selected(model, {"fc1": list(range(n // 2, n))}, ctx.example)
            return outcome.kept, {"n_pruned": outcome.n_pruned, "n_total": outcome.n_total,
                                  "toy": True}

        def train_epochs(self, info):
            return 1

        def segments(self, pruned, recipe, *, macs, images):
            # (this toy trains nothing; it claims one epoch to test the MACs accounting)
            return [Segment(phase="prune", epochs=1, lr="0:0.01", span=1, momentum=0.9,
                            nesterov=False, weight_decay=5e-4, macs=macs, images=images)]

    yield calls
    _unregister(PRUNE_SCHEDULES, "filter/toy_first_half")


def test_a_registered_toy_schedule_runs_through_run_prune_stage(tiny_recipe, tmp_path,
                                                                toy_schedule):
    res = run(tiny_recipe, tmp_path, "prune.schedule=toy_first_half", "prune.rounds=2")
    p = res.result["pruned"]
    assert p["schedule"] == "toy_first_half" and p["toy"] is True
    assert p["layers"] == {"fc1": [16, 32]}
    assert p["train_macs"] == 384 * p["macs_dense"] * 3  # its train_epochs(info) == 1
    assert [c[0] for c in toy_schedule] == ["check", "run"]
    # its segments() enter the trajectory: the phase counts in the setups' epochs
    prune_phase = [s for s in res.result["trajectory"] if s["phase"] == "prune"]
    assert [(s["epochs"], s["lr"]) for s in prune_phase] == [(1, "0:0.01")]
    assert res.result["epochs"]["prune"] == 1
    with pytest.raises(RecipeError, match="prune.update_interval=2 is not used by schedule "
                                          "'toy_first_half'"):
        build_recipe({"prune": {"schedule": "toy_first_half", "update_interval": 2}})


def test_a_schedule_that_trains_must_describe_its_training(tiny_recipe, tmp_path):
    """A schedule whose train_epochs says it trained but whose segments() leave the phase
    out would make its trajectory (and so every setup verdict) silently short: refused."""

    @register_schedule
    class Forgetful(PruneSchedule):
        """Toy: trains (it says) but describes no segments (tests only)."""

        name, granularity = "toy_forgetful", "filter"

        def run(self, ctx, store, model, sdir):
            from prunebench.pruning.regularizers import remove_selected

            n = model.fc1.out_features
            outcome = remove_selected(model, {"fc1": list(range(n // 2, n))}, ctx.example)
            return outcome.kept, {"n_pruned": outcome.n_pruned, "n_total": outcome.n_total}

        def train_epochs(self, info):
            return 2

    try:
        with pytest.raises(PruningError, match="trained 2 epochs but its segments"):
            run(tiny_recipe, tmp_path, "prune.schedule=toy_forgetful")
    finally:
        _unregister(PRUNE_SCHEDULES, "filter/toy_forgetful")
