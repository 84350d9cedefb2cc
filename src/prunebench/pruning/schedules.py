"""Pruning schedules: how the prune stage turns the dense model into the pruned one.

Each schedule is one registered entry of :data:`PRUNE_SCHEDULES`, keyed
``"<granularity>/<name>"`` (``prune.granularity`` / ``prune.schedule``), that owns

* ``uses``: the :class:`~prunebench.recipe.PruneCfg` fields it reads besides the common
  ones (:data:`COMMON_FIELDS`); every other field must stay at its default (the recipe is
  refused with an error naming the field),
* ``validate(cfg)``: its recipe checks (run when the recipe is validated),
* ``check(ctx, model)``: its checks against the built model and the data, run by
  :func:`prunebench.stages.check_prune` before anything is written,
* ``run(ctx, store, model, sdir) -> (kept_or_masks, extra_info)``: the runner. A filter
  schedule prunes ``model`` in place and returns ``kept`` (``{layer: kept channel
  indices}``) and an info dict with ``n_pruned`` / ``n_total``; a weight schedule returns
  its masks. ``sdir`` is the stage directory (checkpoints of its own training),
* ``train_epochs(info)``: the epochs it trained at dense cost (the stage's training MACs).

Adding a schedule is one decorated class::

    @register_schedule
    class MySchedule(PruneSchedule):
        \"\"\"One line that names the method and its paper.\"\"\"

        name, granularity = "mine", "filter"
        uses = frozenset({"lr"})

        def run(self, ctx, store, model, sdir): ...

This module imports neither the run store nor the pipeline: runners that need the stage
helpers (checkpointed training, the dense stage for IMP rewinding) import
:mod:`prunebench.stages` when they run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from prunebench.errors import PruningError, RecipeError
from prunebench.pruning.context import CRITERIA, criterion_needs_data
from prunebench.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

    from prunebench.context import Context
    from prunebench.pruning.regularizers import GrowingRegularizer, Selection
    from prunebench.recipe import PruneCfg
    from prunebench.record import PruneRecord, Segment
    from prunebench.store import RunStore

__all__ = [
    "COMMON_FIELDS",
    "PRUNE_SCHEDULES",
    "PhasePlan",
    "PruneSchedule",
    "register_schedule",
    "phase_segments",
    "schedule_for",
    "schedule_key",
]

#: PruneCfg fields every schedule reads: what to prune, with which criterion, and when.
COMMON_FIELDS = frozenset({"granularity", "schedule", "method", "layers", "skip", "at_epoch"})


class PruneSchedule:
    """Base of a registered pruning schedule (see the module docstring)."""

    name: ClassVar[str]
    granularity: ClassVar[str]  # "filter" | "weight"
    uses: ClassVar[frozenset[str]] = frozenset()
    #: the schedule trains inside the stage with the retraining SGD settings
    uses_retrain_sgd: ClassVar[bool] = False
    #: a version of the schedule's rule, part of the prune stage key when set: bump it when
    #: stored stages of the schedule must not be reused (their result would differ)
    rule: ClassVar[str | None] = None

    @property
    def label(self) -> str:
        return f"{self.name!r} (granularity {self.granularity})"

    def validate(self, cfg: PruneCfg) -> None:
        """Recipe checks: unused fields at their defaults, then :meth:`check_cfg`."""
        _check_unused_fields(self, cfg)
        self.check_cfg(cfg)

    def check_cfg(self, cfg: PruneCfg) -> None:
        """Schedule-specific recipe checks (raise RecipeError naming the field)."""

    def check(self, ctx: Context, model: nn.Module) -> None:
        """Checks against the built dense model and the data, before anything is written."""

    def run(
        self, ctx: Context, store: RunStore, model: nn.Module, sdir: Path
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        raise NotImplementedError

    def train_epochs(self, info: dict[str, Any]) -> int:
        """Epochs this schedule trained at dense cost (from its info); 0: none."""
        return 0

    def segments(self, pruned: PruneRecord, recipe: dict[str, Any], *, macs: int | None,
                 images: int | None) -> list[Segment]:
        """The phase's training of the dense shape as trajectory segments, in order (the
        comparison setups are computed from them). A schedule that trains (``train_epochs``
        > 0) must override this: :func:`phase_segments` refuses a record whose segments do
        not add up to its training epochs, so such a phase can never be left out."""
        return []


PRUNE_SCHEDULES: Registry[PruneSchedule] = Registry("prune schedule")


def schedule_key(granularity: str, name: str) -> str:
    return f"{granularity}/{name}"


def register_schedule(cls: type[PruneSchedule]) -> type[PruneSchedule]:
    """Class decorator: register one instance of ``cls`` under ``granularity/name``."""
    PRUNE_SCHEDULES.register(schedule_key(cls.granularity, cls.name), doc=cls.__doc__)(cls())
    return cls


def _split(key: str) -> tuple[str, str]:
    granularity, _, name = key.partition("/")
    return granularity, name


def phase_segments(cfg: PruneCfg, pruned: PruneRecord, recipe: dict[str, Any], *,
                   macs: int | None, images: int | None) -> list[Segment]:
    """The pruning phase's trajectory segments of a finished prune stage, checked against
    the epochs the schedule says it trained: a schedule that trains but does not describe
    its training (or describes other epochs) is an error, never a silently short trajectory
    that would make unequal budgets look comparable."""
    schedule = schedule_for(cfg)
    segs = schedule.segments(pruned, recipe, macs=macs, images=images)
    trained = schedule.train_epochs(pruned.model_dump())
    described = sum(s.epochs for s in segs)
    if described != trained:
        raise PruningError(
            f"prune schedule {schedule.label} trained {trained} epochs but its segments() "
            f"describe {described}: override PruneSchedule.segments to list its training"
        )
    return segs


def schedule_for(cfg: PruneCfg) -> PruneSchedule:
    """The registered schedule of a prune section (RecipeError naming what is allowed)."""
    key = schedule_key(cfg.granularity, cfg.schedule)
    if key in PRUNE_SCHEDULES:
        return PRUNE_SCHEDULES.get(key)
    keys = [_split(k) for k in PRUNE_SCHEDULES.names()]
    others = [g for g, n in keys if n == cfg.schedule]
    if others:
        raise RecipeError(
            f"prune.schedule {cfg.schedule!r} needs prune.granularity {' or '.join(others)}, "
            f"got {cfg.granularity!r}"
        )
    names = ", ".join(sorted({n for _, n in keys}))
    raise RecipeError(f"unknown prune.schedule {cfg.schedule!r}; registered: {names}")


def _check_unused_fields(entry: PruneSchedule, cfg: PruneCfg) -> None:
    from prunebench.recipe import PruneCfg

    used = COMMON_FIELDS | entry.uses
    for field_name, info in PruneCfg.model_fields.items():
        if field_name in used:
            continue
        default = info.get_default(call_default_factory=True)
        value = getattr(cfg, field_name)
        if value != default:
            users = sorted(
                _split(k)[1]
                for k in PRUNE_SCHEDULES.names()
                if field_name in PRUNE_SCHEDULES.get(k).uses
            )
            hint = f" (used by {', '.join(dict.fromkeys(users))})" if users else ""
            raise RecipeError(
                f"prune.{field_name}={value!r} is not used by schedule {entry.label}: leave it "
                f"at its default {default!r}{hint}"
            )


# ------------------------------------------------------------------- filter schedules

#: the fields that choose the filters (criterion data); every filter schedule uses them
_FILTER_CHOICE = frozenset({"batches"})


def _check_batches(cfg: PruneCfg) -> None:
    from prunebench.recipe import PruneCfg

    default = PruneCfg.model_fields["batches"].default
    if cfg.batches != default and cfg.method in CRITERIA and not criterion_needs_data(cfg.method):
        raise RecipeError(
            f"prune.batches={cfg.batches} is only read by data-driven criteria; criterion "
            f"{cfg.method!r} takes no data: leave it at its default {default}"
        )


def _criterion_batches(ctx: Context) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """``prune.batches`` training batches for a criterion that declared ``needs_data``."""
    from prunebench.context import data_batches

    cfg = ctx.recipe.prune
    assert cfg is not None
    return data_batches(ctx, cfg.batches) if criterion_needs_data(cfg.method) else None


def _filter_ratios(ctx: Context, model: nn.Module) -> dict[str, float]:
    """``prune.layers`` / ``prune.skip`` resolved on ``model``: ``{layer: ratio}``.

    The one resolution every filter schedule uses, at check time and at run time, for every
    form of ``prune.layers`` (a number, ``PATTERN:RATIO`` rules, a stage list given as a
    YAML list or as its string): PatternError / PruningError name the bad value.
    """
    from prunebench.pruning import parse_layer_ratios, prunable_layers, resolve_layer_ratios

    cfg = ctx.recipe.prune
    assert cfg is not None
    spec = parse_layer_ratios(cfg.layers, cfg.skip, model=model)
    return resolve_layer_ratios(
        spec, model, prunable_layers(model, ctx.example, coupled=cfg.coupled)
    )


def _check_filter_layers(ctx: Context, model: nn.Module) -> None:
    """The criterion exists and the layer ratios (every form) resolve on the built model."""
    cfg = ctx.recipe.prune
    assert cfg is not None
    CRITERIA.get(cfg.method)
    _filter_ratios(ctx, model)


def _structured_spec(ctx: Context) -> Any:
    from prunebench.pruning import StructuredSpec

    cfg = ctx.recipe.prune
    assert cfg is not None
    return StructuredSpec(
        method=cfg.method, layers=cfg.layers, skip=list(cfg.skip), scheme=cfg.scheme,
        max_layer_ratio=cfg.max_layer_ratio, normalize=cfg.normalize,
        target_speedup=cfg.target_speedup, target_param_sparsity=cfg.target_param_sparsity,
        coupled=cfg.coupled,
    )


@register_schedule
class OneShotFilters(PruneSchedule):
    """One-shot structured pruning: score on the dense model, remove the filters at once."""

    name, granularity = "oneshot", "filter"
    uses = _FILTER_CHOICE | {
        "scheme", "max_layer_ratio", "normalize", "target_speedup", "target_param_sparsity",
        "coupled",
    }

    def check_cfg(self, cfg: PruneCfg) -> None:
        _check_batches(cfg)
        target = cfg.target_speedup is not None or cfg.target_param_sparsity is not None
        if cfg.coupled and target:  # prune_model refuses it: say so before anything runs
            raise RecipeError(
                "prune.coupled: true takes layer ratios, not prune.target_speedup / "
                "prune.target_param_sparsity: set one of them only"
            )

    def check(self, ctx: Context, model: nn.Module) -> None:
        _check_filter_layers(ctx, model)
        cfg = ctx.recipe.prune
        assert cfg is not None
        target = cfg.target_speedup is not None or cfg.target_param_sparsity is not None
        if target and not _filter_ratios(ctx, model):
            raise PruningError(
                f"a pruning target needs layers to prune; prune.layers={cfg.layers!r} selects "
                "none on this model"
            )

    def run(
        self, ctx: Context, store: RunStore, model: nn.Module, sdir: Path
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        from prunebench.pruning import prune_model

        outcome = prune_model(model, _structured_spec(ctx), ctx.example,
                              batches=_criterion_batches(ctx), seed=ctx.recipe.seed,
                              input_shape=ctx.input_shape)
        return outcome.kept, {"n_pruned": outcome.n_pruned, "n_total": outcome.n_total}


# ---------------------------------------------------------- regularised (GReg / TPP)


@dataclass(frozen=True)
class PhasePlan:
    """The length of a GReg/TPP pruning phase, known before it trains.

    The penalty first equals ``reg_ceiling`` at 0-based step ``steps_to_ceiling``; the
    phase needs ``steps_needed = steps_to_ceiling + 1 + stabilize_interval`` optimiser
    steps and trains ``epochs = ceil(steps_needed / steps_per_epoch)`` epochs, i.e. it
    stops at the end of the epoch in which the rule is met. ``max_epochs`` is the
    configured budget (``prune.epochs``; None: no limit).
    """

    steps_per_epoch: int
    steps_to_ceiling: int
    stabilize_interval: int
    max_epochs: int | None

    @property
    def steps_needed(self) -> int:
        return self.steps_to_ceiling + 1 + self.stabilize_interval

    @property
    def epochs(self) -> int:
        return math.ceil(self.steps_needed / self.steps_per_epoch)

    def check_budget(self, schedule: str, cfg: PruneCfg) -> None:
        """RecipeError (one line, with the numbers) when ``max_epochs`` cannot fit the rule."""
        if self.max_epochs is None or self.max_epochs >= self.epochs:
            return
        available = self.max_epochs * self.steps_per_epoch
        raise RecipeError(
            f"prune.epochs={self.max_epochs} is too small for schedule {schedule!r}: it needs "
            f"{self.steps_needed} steps (the penalty reaches prune.reg_ceiling={cfg.reg_ceiling}"
            f" at step {self.steps_to_ceiling}, then prune.stabilize_interval="
            f"{self.stabilize_interval} more) but {self.max_epochs} epochs x "
            f"{self.steps_per_epoch} steps/epoch = {available} steps; set prune.epochs >= "
            f"{self.epochs} or omit it"
        )

    def outcome(self, schedule: str, epochs_done: int) -> dict[str, Any]:
        """The phase's record after ``epochs_done`` epochs; PruningError if the rule is unmet
        (the selected filters are then never removed nor stored)."""
        steps = epochs_done * self.steps_per_epoch
        if steps < self.steps_needed:
            raise PruningError(
                f"schedule {schedule!r} ended its pruning phase after {epochs_done} epochs = "
                f"{steps} steps, before the penalty reached its ceiling and stabilised "
                f"({self.steps_needed} steps needed: ceiling at step {self.steps_to_ceiling}, "
                f"+{self.stabilize_interval}); nothing was removed"
            )
        return {
            "epochs": epochs_done,
            "max_epochs": self.max_epochs,
            "steps": steps,
            "steps_per_epoch": self.steps_per_epoch,
            "steps_to_ceiling": self.steps_to_ceiling,
            "stabilize_interval": self.stabilize_interval,
            "stabilize_steps": steps - self.steps_to_ceiling - 1,
            "reg_finished": True,
        }


class RegularisedFilters(PruneSchedule):
    """Shared by GReg and TPP: choose up front, train with a growing penalty, remove."""

    granularity = "filter"
    uses_retrain_sgd = True
    # stages stored before the stopping rule removed filters whose penalty never reached
    # the ceiling: never reuse them
    rule = "until-ceiling"
    _GROWTH = frozenset({
        "epochs", "lr", "reg_granularity", "update_interval", "reg_ceiling", "stabilize_interval",
    })

    def check_cfg(self, cfg: PruneCfg) -> None:
        _check_batches(cfg)
        if cfg.lr is None:
            raise RecipeError(
                f"schedule {self.name!r} needs prune.lr (the pruning-phase LR schedule); "
                "prune.epochs, the phase's maximum epochs, may be omitted"
            )

    def build_hook(
        self, model: nn.Module, selection: Selection, cfg: PruneCfg
    ) -> GrowingRegularizer:
        raise NotImplementedError

    def plan(self, ctx: Context) -> PhasePlan:
        from prunebench.pruning.regularizers import steps_to_ceiling

        cfg = ctx.recipe.prune
        assert cfg is not None
        return PhasePlan(
            steps_per_epoch=len(ctx.loaders_for("prune").train),
            steps_to_ceiling=steps_to_ceiling(cfg.reg_granularity, cfg.update_interval,
                                              cfg.reg_ceiling),
            stabilize_interval=cfg.stabilize_interval,
            max_epochs=cfg.epochs,
        )

    def check(self, ctx: Context, model: nn.Module) -> None:
        cfg = ctx.recipe.prune
        assert cfg is not None
        _check_filter_layers(ctx, model)
        self.plan(ctx).check_budget(self.name, cfg)

    def train_epochs(self, info: dict[str, Any]) -> int:
        return int(info.get("epochs", 0))

    def segments(self, pruned: PruneRecord, recipe: dict[str, Any], *, macs: int | None,
                 images: int | None) -> list[Segment]:
        from prunebench.record import regularised_phase

        return regularised_phase(pruned, recipe, macs=macs, images=images)

    def run(
        self, ctx: Context, store: RunStore, model: nn.Module, sdir: Path
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        from prunebench import io
        from prunebench.pruning.regularizers import remove_selected, select_filters
        from prunebench.recipe import RetrainCfg, TrainCfg
        from prunebench.stages import train_resumable
        from prunebench.train import evaluate_all

        r = ctx.recipe
        cfg = r.prune
        assert cfg is not None and cfg.lr is not None
        plan = self.plan(ctx)
        plan.check_budget(self.name, cfg)
        ratios = _filter_ratios(ctx, model)  # prune.coupled stays False (not in `uses`)
        selection = select_filters(model, ratios, cfg.method, ctx.example, seed=r.seed,
                                   batches=_criterion_batches(ctx))
        hooks = self.build_hook(model, selection, cfg)
        sgd = r.retrain or RetrainCfg()
        tcfg = TrainCfg(epochs=plan.epochs, lr=cfg.lr, momentum=sgd.momentum,
                        nesterov=sgd.nesterov, weight_decay=sgd.weight_decay)
        state = train_resumable(
            ctx, model, tcfg, "prune", sdir / "latest.pt", hooks=hooks,
            on_epoch=lambda s: io.write_jsonl(sdir / "metrics.jsonl", s.history),
        )
        io.write_jsonl(sdir / "metrics.jsonl", state.history)
        phase = plan.outcome(self.name, state.epoch)  # raises before any removal
        before = evaluate_all(model, ctx.loaders)
        outcome = remove_selected(model, selection, ctx.example)
        extra = {
            "n_pruned": outcome.n_pruned, "n_total": outcome.n_total, **phase, "lr": cfg.lr,
            "reg_final": hooks.lam_at(phase["steps"] - 1), "before_removal": before,
            "regularizer": {k: v for k, v in hooks.state_dict().items()
                            if k not in ("kind", "layers", "step", "lam", "finished",
                                         "finished_step")},
        }
        return outcome.kept, extra


@register_schedule
class GRegSchedule(RegularisedFilters):
    """GReg-1 growing L2 regularisation (Wang, Qin, Zhang, Fu, ICLR 2021)."""

    name = "greg"
    uses = _FILTER_CHOICE | RegularisedFilters._GROWTH | {"reg_bias_bn"}

    def build_hook(
        self, model: nn.Module, selection: Selection, cfg: PruneCfg
    ) -> GrowingRegularizer:
        from prunebench.pruning.regularizers import GReg

        return GReg(model, selection, reg_granularity=cfg.reg_granularity,
                    update_interval=cfg.update_interval, reg_ceiling=cfg.reg_ceiling,
                    penalize_bias=cfg.reg_bias_bn, penalize_bn=cfg.reg_bias_bn)


@register_schedule
class TPPSchedule(RegularisedFilters):
    """Trainability-preserving pruning, Gram-matrix penalty (Wang & Fu, ICLR 2023)."""

    name = "tpp"
    uses = _FILTER_CHOICE | RegularisedFilters._GROWTH | {
        "tpp_gram_weight", "tpp_weight_l2", "tpp_bn_reg",
    }

    def build_hook(
        self, model: nn.Module, selection: Selection, cfg: PruneCfg
    ) -> GrowingRegularizer:
        from prunebench.pruning.regularizers import TPP

        return TPP(model, selection, reg_granularity=cfg.reg_granularity,
                   update_interval=cfg.update_interval, reg_ceiling=cfg.reg_ceiling,
                   gram_weight=cfg.tpp_gram_weight, weight_l2=cfg.tpp_weight_l2,
                   penalize_bias=True, penalize_bn=cfg.tpp_bn_reg)


# ------------------------------------------------------------------- weight schedules


def _check_sparsity(cfg: PruneCfg) -> None:
    if isinstance(cfg.layers, bool) or not isinstance(cfg.layers, float | int) or not (
        0 <= cfg.layers < 1
    ):
        raise RecipeError(
            f"weight pruning takes one sparsity in [0, 1) as prune.layers, got {cfg.layers!r}"
        )
    if cfg.skip:
        # the weight masks cover every Conv2d/Linear weight but the output layer: a skip
        # pattern would be silently ignored
        raise RecipeError(
            f"prune.skip={list(cfg.skip)!r} is not supported by weight pruning (granularity "
            "weight masks every Conv2d/Linear layer but the output layer): leave it empty"
        )


def _imp_fraction(target: float, rounds: int) -> float:
    """The fraction of the remaining weights one IMP round prunes to reach ``target`` in
    ``rounds`` rounds: ``1 - (1 - target) ** (1 / rounds)``, RecipeError unless in (0, 1)
    (a target of 0, or one too small to move in ``rounds`` rounds, prunes nothing)."""
    fraction = 1 - (1 - target) ** (1 / rounds)
    if not 0 < fraction < 1:
        raise RecipeError(
            f"schedule 'imp' needs a sparsity in (0, 1) as prune.layers, got {target!r} with "
            f"prune.rounds={rounds} (a per-round fraction of {fraction!r}); for no pruning "
            "use schedule oneshot"
        )
    return fraction


def _mask_scope(cfg: PruneCfg) -> str:
    return "layer" if cfg.scheme == "layerwise" else "global"


@register_schedule
class OneShotMasks(PruneSchedule):
    """One-shot unstructured pruning: magnitude or random weight masks."""

    name, granularity = "oneshot", "weight"
    uses = frozenset({"scheme"})

    def check_cfg(self, cfg: PruneCfg) -> None:
        if cfg.method not in ("magnitude", "random"):
            raise RecipeError(
                f"weight pruning prune.method {cfg.method!r}: allowed magnitude, random"
            )
        _check_sparsity(cfg)

    def run(
        self, ctx: Context, store: RunStore, model: nn.Module, sdir: Path
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        from prunebench.pruning.masks import apply_masks, magnitude_masks, random_masks

        cfg = ctx.recipe.prune
        assert cfg is not None
        target = float(cfg.layers)  # type: ignore[arg-type]
        if cfg.method == "random":
            masks = random_masks(model, target, seed=ctx.recipe.seed, scope=_mask_scope(cfg))
        else:
            masks = magnitude_masks(model, target, scope=_mask_scope(cfg))
        apply_masks(model, masks)
        return masks, {}


@register_schedule
class IterativeMagnitude(PruneSchedule):
    """Iterative magnitude pruning with weight rewinding (Frankle & Carbin, ICLR 2019)."""

    name, granularity = "imp", "weight"
    uses = frozenset({"scheme", "rounds", "rewind_epoch"})

    def check_cfg(self, cfg: PruneCfg) -> None:
        if cfg.method != "magnitude":
            raise RecipeError(
                f"schedule 'imp' prunes by magnitude: prune.method must be magnitude, "
                f"got {cfg.method!r}"
            )
        _check_sparsity(cfg)
        _imp_fraction(float(cfg.layers), cfg.rounds)  # type: ignore[arg-type]

    def train_epochs(self, info: dict[str, Any]) -> int:
        return int(info.get("imp_epochs", 0))

    def segments(self, pruned: PruneRecord, recipe: dict[str, Any], *, macs: int | None,
                 images: int | None) -> list[Segment]:
        from prunebench.record import rewound_rounds

        return rewound_rounds(pruned, recipe, macs=macs, images=images)

    def run(
        self, ctx: Context, store: RunStore, model: nn.Module, sdir: Path
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        from prunebench.plan import base_stage
        from prunebench.pruning.lottery import imp_schedule, rewind
        from prunebench.pruning.masks import MaskHooks, magnitude_masks
        from prunebench.stages import cpu_state, run_base_stage, train_resumable
        from prunebench.train import TrainState

        r = ctx.recipe
        cfg = r.prune
        assert cfg is not None and r.pretrain is not None
        target = float(cfg.layers)  # type: ignore[arg-type]
        scope = _mask_scope(cfg)
        fraction = _imp_fraction(target, cfg.rounds)
        schedule = imp_schedule(target, fraction)
        rewind_model, _, _ = run_base_stage(ctx, store, base_stage(r, cfg.rewind_epoch))
        rewind_state = cpu_state(rewind_model)
        masks = None
        spent = 0
        for i, sparsity in enumerate(schedule):
            masks = magnitude_masks(model, sparsity, scope=scope, existing=masks)
            rewind(model, rewind_state, masks)
            if i == len(schedule) - 1:
                break
            # retrain the rewound, masked network to the end of the pretraining schedule
            state = train_resumable(
                ctx, model, r.pretrain, "prune", sdir / f"round{i + 1}.pt",
                hooks=MaskHooks(masks), start=TrainState(epoch=cfg.rewind_epoch),
            )
            spent += state.epoch - cfg.rewind_epoch
        assert masks is not None
        return masks, {"rounds": len(schedule), "sparsity_per_round": schedule,
                       "rewind_epoch": cfg.rewind_epoch, "imp_epochs": spent}
