"""The run record: one typed, schema-versioned description of a finished (or failed) run.

The stage runners produce it, :func:`prunebench.pipeline.run` writes it once as
``result.json``, the store parses it once (:meth:`RunRecord.parse`, which also reads the
schema-1 files of older versions), and compare, report, card and CLI consume it. Nothing
downstream reads a result through ``dict.get(...) or default`` chains: a value that was
never measured is ``None`` and stays ``None`` (a comparison that needs it fails instead of
assuming a default).

The record's :attr:`~RunRecord.trajectory` is what the comparison setups are computed
from: every epoch of training the run's final weights descend from, as segments in order
(pretraining epochs the run inherited, the pruning phase's epochs, retraining), each with
its LR schedule, SGD settings and per-image MACs. A scratch run inherits nothing: its
trajectory is its own training only, so its budget never includes the dense pretraining.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from prunebench.errors import StoreError
from prunebench.io import finite_json
from prunebench.schedule import parse_schedule

SCHEMA = 2
#: forward + backward ~ 3x the forward multiply-accumulates (the usual convention)
TRAIN_MACS_FACTOR = 3

Status = Literal["done", "running", "failed", "interrupted", "diverged", "incomplete"]
Phase = Literal["pretrain", "prune", "retrain"]


class _Rec(BaseModel):
    """Records keep what they do not know about (newer fields) and validate what they do."""

    model_config = ConfigDict(extra="allow", frozen=False)


class Segment(BaseModel):
    """Consecutive training epochs of one phase with one LR schedule and SGD setting.

    Epoch ``first + i`` (``i < epochs``) trains at ``schedule.lr_at(first + i, span)``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    phase: Phase
    epochs: int = Field(ge=0)
    lr: str  # canonical schedule string
    first: int = Field(0, ge=0)
    span: int = Field(ge=0)  # the epochs the schedule spans (cosine end, stretched keys)
    momentum: float
    nesterov: bool
    weight_decay: float
    macs: int | None = Field(None, ge=0)  # per-image forward MACs (None: unknown)
    images: int | None = Field(None, ge=0)  # training images per epoch (None: unknown)

    def lrs(self) -> list[float]:
        sched = parse_schedule(self.lr)
        return [sched.lr_at(self.first + i, max(self.span, 1)) for i in range(self.epochs)]

    @property
    def train_macs(self) -> int | None:
        """Training MACs of the segment; ``None`` when the MACs or images are unknown."""
        if self.macs is None or self.images is None:
            return None
        return int(self.epochs * self.images * self.macs * TRAIN_MACS_FACTOR)


class DataRecord(_Rec):
    name: str | None = None
    source: str | None = None
    checksum: str | None = None
    train_images: int | None = None


class DenseRecord(_Rec):
    """The dense model the run started from: pretrained here, a checkpoint, or an init."""

    kind: Literal["pretrain", "base", "init"] | None = None
    test_acc: float | None = None
    val_acc: float | None = None
    params: int | None = None
    macs: int | None = None
    epochs: int | None = None
    train_macs: int | None = None
    sha256: str | None = None


class PruneRecord(_Rec):
    """What the pruning stage did (sizes, sparsity, its own training phase if any)."""

    schedule: str | None = None
    granularity: Literal["filter", "weight"] | None = None
    params_dense: int | None = None
    params_pruned: int | None = None
    macs_dense: int | None = None
    macs_pruned: int | None = None
    param_sparsity: float | None = None  # from the pruned model's shapes
    flops_sparsity: float | None = None
    speedup: float | None = None
    nonzero_params_pruned: int | None = None
    nonzero_sparsity: float | None = None  # zeros included: the rate of masked runs
    test_acc: float | None = None
    val_acc: float | None = None
    epochs: int | None = None  # GReg/TPP phase epochs
    lr: str | None = None
    imp_epochs: int | None = None
    rewind_epoch: int | None = None

    @property
    def masked(self) -> bool:
        return self.granularity == "weight"

    @property
    def rate_sparsity(self) -> float | None:
        """The compression rate (%) that S1 compares: non-zero sparsity for masked runs
        (their shapes never change), shape sparsity for removed filters."""
        return self.nonzero_sparsity if self.masked else self.param_sparsity

    @property
    def rate_speedup(self) -> float | None:
        """Speedup from removed structure; ``None`` for masked runs (zeros do not speed up
        dense kernels, and the dense-shape count would claim 1.0x)."""
        return None if self.masked else self.speedup


class RetrainRecord(_Rec):
    """The retraining actually run (Scratch-E/B rewrite the declared epochs and LR)."""

    epochs: int | None = None
    lr: str | None = None
    init: str | None = None
    budget: str | None = None


class TARecord(_Rec):
    epochs: int | None = None
    start: int | None = None
    test: float | None = None
    val: float | None = None


class Budget(_Rec):
    """Training epochs / MACs per phase that the run's weights actually cost (``None``:
    unknown, which no budget comparison accepts)."""

    pretrain: int | None = 0
    prune: int | None = 0
    retrain: int | None = 0
    total: int | None = 0


class RunRecord(_Rec):
    """One run's result. ``schema`` 1 files (no ``schema`` key) are upgraded on parse."""

    schema_: int = Field(SCHEMA, alias="schema")
    id: str
    status: Status = "done"
    error: str | None = None
    stages: dict[str, str] = Field(default_factory=dict)
    origin: str | None = None  # the dense run / checkpoint / init the weights descend from
    pruned_at: int | None = None  # pretraining epoch pruned at (PxFy); None: the end
    code: dict[str, str] = Field(default_factory=dict)  # plugin code hashes by stage
    data: DataRecord = Field(default_factory=DataRecord)
    dense: DenseRecord = Field(default_factory=DenseRecord)
    pruned: PruneRecord | None = None
    retrain: RetrainRecord | None = None
    trajectory: list[Segment] = Field(default_factory=list)
    epochs: Budget = Field(default_factory=Budget)
    train_macs: Budget = Field(default_factory=Budget)
    ta: TARecord | None = None
    best_val: dict[str, Any] | None = None
    jsv: dict[str, Any] | None = None
    isometry: dict[str, Any] | None = None
    test_acc: float | None = None
    val_acc: float | None = None
    test_top5: float | None = None
    device: str | None = None
    torch: str | None = None
    python: str | None = None
    prunebench: str | None = None
    seconds: float | None = None

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    # -- derived --------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.status == "done" and self.test_acc is not None

    @property
    def inherits(self) -> bool:
        """Whether the final weights descend from the dense model (not scratch)."""
        return self.retrain is None or self.retrain.init != "scratch"

    @property
    def inherited_epochs(self) -> int:
        """Leading pretraining epochs of the trajectory (shared with the dense run)."""
        return sum(s.epochs for s in self.trajectory if s.phase == "pretrain")

    @property
    def rate_sparsity(self) -> float | None:
        """The compression rate S1 compares (0 for a dense run, ``None`` when unknown)."""
        return self.pruned.rate_sparsity if self.pruned is not None else 0.0

    @property
    def rate_speedup(self) -> float | None:
        return self.pruned.rate_speedup if self.pruned is not None else 1.0

    def to_json(self) -> dict[str, Any]:
        return finite_json(self.model_dump(mode="json", by_alias=True, exclude_none=True))

    # -- parsing --------------------------------------------------------------------------
    @classmethod
    def parse(cls, result: dict[str, Any], recipe: dict[str, Any] | None = None) -> RunRecord:
        """A record from a ``result.json`` dict (any schema) and its run's stored recipe."""
        if not isinstance(result, dict):
            raise StoreError(f"run result is not a JSON object: {type(result).__name__}")
        raw = dict(result)
        if raw.get("schema") is None:
            raw = _upgrade_v1(raw, recipe or {})
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise StoreError(
                f"run {raw.get('id')!r}: result field {loc}: {err['msg']}"
            ) from None


@dataclass
class RunResult:
    """What :func:`prunebench.run` returns: the run id, its folder and the stored result
    (``result``: the record as JSON; ``record``: the typed :class:`RunRecord`)."""

    id: str
    dir: Path
    result: dict[str, Any]
    recipe: dict[str, Any] = field(default_factory=dict)

    @property
    def record(self) -> RunRecord:
        return RunRecord.parse(self.result, self.recipe)

    @property
    def status(self) -> str:
        return str(self.result.get("status", "unknown"))

    @property
    def test_acc(self) -> float | None:
        """Final-epoch top-1 test accuracy in percent (never the best test epoch)."""
        return self.result.get("test_acc")

    def metrics(self) -> list[dict[str, Any]]:
        from prunebench.io import read_jsonl

        return read_jsonl(self.dir / "metrics.jsonl")




# -- the trajectory, from the recipe and what the stages did ---------------------------------


def _sgd(cfg: dict[str, Any] | None) -> dict[str, Any]:
    cfg = cfg or {}
    return {"momentum": float(cfg.get("momentum", 0.9)),
            "nesterov": bool(cfg.get("nesterov", False)),
            "weight_decay": float(cfg.get("weight_decay", 5e-4))}


def regularised_phase(pruned: PruneRecord, recipe: dict[str, Any], *, macs: int | None,
                      images: int | None) -> list[Segment]:
    """A GReg/TPP-style phase: ``pruned.epochs`` epochs of the dense shape at ``pruned.lr``
    with the retraining SGD settings."""
    if not (pruned.epochs and pruned.lr):
        return []
    span = int(getattr(pruned, "lr_span", None) or pruned.epochs)
    return [Segment(phase="prune", epochs=int(pruned.epochs), lr=pruned.lr, span=span,
                    macs=macs, images=images, **_sgd(recipe.get("retrain")))]


def rewound_rounds(pruned: PruneRecord, recipe: dict[str, Any], *, macs: int | None,
                   images: int | None) -> list[Segment]:
    """IMP's rounds: each but the last retrains the rewound, masked network from the rewind
    epoch to the end of the pretraining schedule."""
    pre = recipe.get("pretrain")
    if not (pruned.imp_epochs and pre):
        return []
    rounds = int(getattr(pruned, "rounds", 1) or 1) - 1
    first = int(pruned.rewind_epoch or 0)
    return [Segment(phase="prune", epochs=int(pre["epochs"]) - first, lr=str(pre["lr"]),
                    first=first, span=int(pre["epochs"]), macs=macs, images=images,
                    **_sgd(pre)) for _ in range(max(rounds, 0))]


#: the pruning phases of schema-1 records, whose schedules predate
#: :meth:`prunebench.pruning.schedules.PruneSchedule.segments`
_LEGACY_PHASES = {"greg": regularised_phase, "tpp": regularised_phase}


def build_trajectory(
    recipe: dict[str, Any],
    *,
    images: int | None,
    dense: DenseRecord,
    pruned: PruneRecord | None,
    retrain: RetrainRecord | None,
    prune_segments: list[Segment] | None = None,
) -> list[Segment]:
    """Every epoch the run's final weights descend from, as segments in order.

    ``recipe`` is the stored (effective, fully dumped) recipe dict. Pretraining epochs count
    only when the weights are inherited (not ``retrain.init: scratch``) and only up to the
    pruning epoch (PxFy); the pruning phase trains the dense shape (``prune_segments``, from
    the run's pruning schedule: :meth:`~prunebench.pruning.schedules.PruneSchedule.segments`;
    ``None`` for a schema-1 record, whose phase is read by schedule name); retraining trains
    the pruned model with its effective schedule.
    """
    segs: list[Segment] = []
    scratch = retrain is not None and retrain.init == "scratch"
    pre = recipe.get("pretrain")
    dense_macs = dense.macs
    if not scratch and dense.kind == "pretrain" and pre and dense.epochs:
        segs.append(Segment(phase="pretrain", epochs=int(dense.epochs), lr=str(pre["lr"]),
                            span=int(pre["epochs"]), macs=dense_macs, images=images,
                            **_sgd(pre)))
    if pruned is not None and not scratch:
        if prune_segments is None:
            legacy = _LEGACY_PHASES.get(pruned.schedule or "", rewound_rounds)
            prune_segments = legacy(pruned, recipe, macs=dense_macs, images=images)
        segs.extend(prune_segments)
    if retrain is not None and retrain.epochs and retrain.lr is not None:
        macs = pruned.macs_pruned if pruned is not None else dense_macs
        segs.append(Segment(phase="retrain", epochs=int(retrain.epochs), lr=retrain.lr,
                            span=int(retrain.epochs), macs=macs, images=images,
                            **_sgd(recipe.get("retrain"))))
    return segs


def budgets(segs: list[Segment]) -> tuple[Budget, Budget]:
    """(epochs, training MACs) per phase and in total, from the trajectory; a phase whose
    MACs are unknown makes it and the total ``None``."""
    ep: dict[str, int] = {"pretrain": 0, "prune": 0, "retrain": 0}
    macs: dict[str, int | None] = {"pretrain": 0, "prune": 0, "retrain": 0}
    for s in segs:
        ep[s.phase] += s.epochs
        m, seg = macs[s.phase], s.train_macs
        macs[s.phase] = None if m is None or seg is None else m + seg
    vals = list(macs.values())
    total = None if any(v is None for v in vals) else sum(v for v in vals if v is not None)
    return Budget(**ep, total=sum(ep.values())), Budget(**macs, total=total)


def _upgrade_v1(raw: dict[str, Any], recipe: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 (``result.json`` before the typed record): add what can be derived.

    Budgets are recomputed from the trajectory (schema 1 charged scratch runs with the
    pretraining they never used); the origin and pruning epoch come from the recipe.
    """
    out = dict(raw)
    out["schema"] = SCHEMA
    prune_cfg = recipe.get("prune") or {}
    if out.get("pruned") is not None:
        out["pruned"] = {**out["pruned"], "granularity": prune_cfg.get("granularity", "filter")}
    at = prune_cfg.get("at_epoch") if prune_cfg else None
    out["pruned_at"] = at
    stages = out.get("stages") or {}
    dense = out.get("dense") or {}
    if dense.get("sha256"):
        out["origin"] = f"sha256:{dense['sha256']}"
    elif at is None:
        for kind in ("pretrain", "base", "init"):
            if stages.get(kind):
                out["origin"] = f"{kind}:{stages[kind]}"
                break
    else:
        out["origin"] = _origin_from_recipe(recipe)
    if out.get("ta") is not None:
        out["ta"] = {"start": 0, **out["ta"]}
    try:
        rec = RunRecord.model_validate({**out, "trajectory": [], "epochs": {}, "train_macs": {}})
    except ValidationError:
        return out  # the caller reports the first validation error
    images = rec.data.train_images
    segs = build_trajectory(recipe, images=images, dense=rec.dense, pruned=rec.pruned,
                            retrain=rec.retrain)
    ep, macs = budgets(segs)
    out["trajectory"] = [s.model_dump() for s in segs]
    out["epochs"], out["train_macs"] = ep.model_dump(), macs.model_dump()
    return out


def _origin_from_recipe(recipe: dict[str, Any]) -> str | None:
    from prunebench.errors import PrunebenchError
    from prunebench.recipe import build_recipe

    try:
        return origin(build_recipe(recipe), legacy=True)
    except (PrunebenchError, OSError, ValueError):
        return None


def origin(recipe: Any, *, legacy: bool = False) -> str:
    """The identity of what a run's weights descend from: the *whole* dense run (its
    pretraining stage key without a stop epoch, so PxFy runs pruned at different epochs
    of one dense run share it), a checkpoint's sha256, or the initialisation stage.
    ``legacy``: as schema-1 records keyed their stages (for upgrading them)."""
    from prunebench.plan import base_stage

    stage = base_stage(recipe, None, legacy=legacy)
    if stage.kind == "base":
        return f"sha256:{stage.config['base_model_sha256']}"
    return f"{stage.kind}:{stage.key}"
