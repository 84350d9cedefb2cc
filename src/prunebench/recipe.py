"""The declarative recipe: pydantic models, YAML load/dump, ``--set`` overrides, hashing.

A recipe describes one run: ``pretrain -> prune -> retrain``. Sections:

``data``      dataset name, batch size, validation split, augmentation, data seed
``model``     registered model name + kwargs
``pretrain``  epochs, LR schedule, SGD settings  -- or ``base_model``: a checkpoint path
``prune``     criterion (``method``), granularity, layer ratios, skip patterns, epoch
``retrain``   epochs, LR schedule, SGD settings (``finetune`` is accepted as an alias)
``seed``      the run seed (initialisation, batch order)

Identity: :func:`recipe_hash` hashes only the fields that differ from their defaults
(the open_lth rule), so adding an option with a neutral default keeps old ids valid.
Fields that do not change results (``data.data_dir``, ``device``, ``name``) never enter it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from prunebench.errors import PrunebenchError, RecipeError, ScheduleError
from prunebench.schedule import Schedule, parse_schedule


def _canonical_lr(v: Any) -> str:
    try:
        return parse_schedule(v).canonical()
    except ScheduleError as exc:
        raise ValueError(str(exc)) from None
    except (TypeError, AttributeError, KeyError, IndexError, OverflowError, RecursionError):
        raise ValueError(f"bad LR schedule {_short(v)}") from None


def _loc(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as ``section.field``; odd keys (spaces, newlines, ...) are
    shown quoted so the message stays on one line."""
    parts = [str(p) if isinstance(p, int) or re.fullmatch(r"[\w-]+", str(p), re.ASCII)
             else _short(p, 40) for p in loc]
    return ".".join(parts) or "(top level)"


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to one short line (error messages)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a hostile __repr__ never breaks an error message
        text = f"<{type(value).__name__}>"
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataCfg(_Cfg):
    name: str = "fashion_mnist"
    batch_size: int = Field(128, gt=0)
    eval_batch_size: int = Field(1000, gt=0)
    val_size: int | float = 5000
    augment: bool = False
    seed: int = 0
    train_subset: int | None = Field(None, gt=0, description="use only this many training images")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    data_dir: str | None = Field(None, description="where to look first (not part of the id)")

    @field_validator("val_size")
    @classmethod
    def _val(cls, v: int | float) -> int | float:
        if isinstance(v, float) and not (0 <= v < 1) or isinstance(v, int) and v < 0:
            raise ValueError(f"val_size {v!r}: use a count >= 0 or a fraction in [0, 1)")
        return v


class ModelCfg(_Cfg):
    name: str = "lenet5"
    kwargs: dict[str, Any] = Field(default_factory=dict)


class TrainCfg(_Cfg):
    """One training stage: SGD with momentum, weight decay and an LR schedule."""

    epochs: int = Field(ge=0)
    lr: str
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0)

    @field_validator("lr", mode="before")
    @classmethod
    def _lr(cls, v: Any) -> str:
        return _canonical_lr(v)

    @model_validator(mode="before")
    @classmethod
    def _pxfy(cls, values: Any) -> Any:
        """``lr: "pxfy:0.1"`` expands to the paper's PxFy retraining schedule for ``epochs``."""
        lr = values.get("lr") if isinstance(values, dict) else None
        if isinstance(lr, str) and lr.replace(" ", "").startswith("pxfy:"):
            from prunebench.pruning.scratch import pxfy_schedule

            start = lr.split(":", 1)[1]
            try:  # float() also reads non-ASCII digits ("٠.١") and "1_0": ASCII only
                if not start.strip().isascii() or "_" in start:
                    raise ValueError(start)
                start_lr = float(start)
            except ValueError:
                raise ValueError(f"bad start LR {start!r} in {lr!r}: expected 'pxfy:LR'") from None
            epochs = values.get("epochs", cls.model_fields["epochs"].default)
            if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
                raise ValueError(f"lr {lr!r} needs epochs as a whole number >= 0 "
                                 f"(got {_short(epochs)})")
            try:
                values = {**values, "lr": pxfy_schedule(start_lr, epochs)}
            except PrunebenchError as exc:
                raise ValueError(str(exc)) from None
        return values

    @property
    def schedule(self) -> Schedule:
        return parse_schedule(self.lr)


class PretrainCfg(TrainCfg):
    epochs: int = Field(200, ge=0)
    lr: str = "0:0.1,100:0.01,150:0.001"


class PruneCfg(_Cfg):
    """The pruning stage: granularity, criterion, ratio scheme and schedule."""

    granularity: Literal["filter", "weight"] = "filter"
    method: str = Field("l1", description="criterion: l1, l2, random, taylor_fo, ... / magnitude")
    layers: str | float | list[float] = Field(
        0.5, description="layer ratios: 'PATTERN:RATIO,...', one ratio, or a per-stage list"
    )
    skip: list[str] = Field(default_factory=list)
    scheme: Literal["layerwise", "global"] = "layerwise"
    max_layer_ratio: float = Field(0.9, gt=0, lt=1, description="global scheme: per-layer cap")
    normalize: bool = Field(False, description="global scheme: normalise scores per layer")
    target_speedup: float | None = Field(None, gt=1)
    target_param_sparsity: float | None = Field(None, gt=0, lt=100)
    batches: int = Field(4, ge=1, description="data batches for data-driven criteria")
    schedule: str = Field(
        "oneshot", description="a registered prune schedule: oneshot, greg, tpp, imp, ..."
    )
    epochs: int | None = Field(
        None, ge=1, description="greg/tpp: the phase's maximum epochs; null: as many as needed"
    )
    lr: str | None = Field(None, description="pruning-phase LR schedule (greg, tpp)")
    reg_granularity: float = Field(1e-4, gt=0, description="greg/tpp: penalty increment")
    update_interval: int = Field(5, ge=1, description="greg/tpp: steps between increments")
    reg_ceiling: float = Field(1.0, gt=0, description="greg/tpp: the penalty's ceiling")
    stabilize_interval: int = Field(
        0, ge=0, description="greg/tpp: steps trained at the ceiling before removal"
    )
    reg_bias_bn: bool = Field(
        False, description="greg: also penalise the pruned filters' bias and BN gamma/beta"
    )
    tpp_gram_weight: float = Field(1000.0, ge=0, description="tpp: Gram-term weight (lw_opp)")
    tpp_weight_l2: bool = Field(True, description="tpp: L2 term on pruned weights and biases")
    tpp_bn_reg: bool = Field(True, description="tpp: L2 term on the following BN gamma/beta")
    rounds: int = Field(1, ge=1, description="imp: pruning rounds")
    rewind_epoch: int = Field(0, ge=0, description="imp: rewind to this pretraining epoch")
    at_epoch: int | None = Field(
        None, ge=0, description="prune at this pretraining epoch (PxFy); default: the end"
    )
    coupled: bool = Field(
        False, description="oneshot: prune residual-tied layers as coupled groups"
    )

    @field_validator("lr", mode="before")
    @classmethod
    def _lr(cls, v: Any) -> str | None:
        return None if v is None else _canonical_lr(v)

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: str | float | list[float]) -> str | float | list[float]:
        """Every form (a number, ``PATTERN:RATIO`` rules, a stage list as a YAML list or as
        its string) is parsed by the same parser: ratios in [0, 1) and the syntax are
        checked here, before anything runs; matching the model is checked before any stage
        (:func:`prunebench.stages.check_prune`). The value is kept as given (run ids)."""
        from prunebench.pruning.ratios import parse_layer_ratios

        try:
            parse_layer_ratios(v)
        except PrunebenchError as exc:
            raise ValueError(str(exc)) from None
        return v

    @field_validator("epochs", mode="before")
    @classmethod
    def _epochs(cls, v: Any) -> Any:
        return None if v == 0 and not isinstance(v, bool) else v  # 0: the old "unset"

    @model_validator(mode="after")
    def _consistent(self) -> PruneCfg:
        """The registered schedule validates its own fields (the others stay at defaults)."""
        from prunebench.errors import PrunebenchError
        from prunebench.pruning.schedules import schedule_for

        if self.target_speedup is not None and self.target_param_sparsity is not None:
            raise ValueError("give target_speedup or target_param_sparsity, not both")
        try:
            schedule_for(self).validate(self)
        except PrunebenchError as exc:
            raise ValueError(str(exc)) from None
        return self


class RetrainCfg(TrainCfg):
    epochs: int = Field(120, ge=0)
    lr: str = "0:0.01,60:0.001,90:0.0001"
    init: Literal["inherit", "scratch", "orthp"] = Field(
        "inherit", description="inherit the pruned weights, re-initialise, or OrthP"
    )
    init_scheme: Literal["kaiming", "orthogonal"] = "kaiming"
    budget: Literal["E", "B", "total", "total_flops"] | None = Field(
        None,
        description="scratch only: E (K1 epochs), B (K1*F1/F2), total (K1+Kp+K2), "
        "total_flops ((K1+Kp)*F1/F2+K2); LR from the pretraining recipe",
    )
    orth_reg: float = Field(0.0, ge=0, description="kernel orthogonality regulariser weight")

    @model_validator(mode="after")
    def _budget(self) -> RetrainCfg:
        if self.budget is not None and self.init != "scratch":
            raise ValueError("retrain.budget (Scratch-E/B) needs retrain.init: scratch")
        return self


class MeasureCfg(_Cfg):
    """Trainability measurements taken during retraining (they never change the weights)."""

    jsv_every: int | None = Field(
        None, ge=0, description="JSV every N retraining epochs; None: 1 under 1M params, else 0"
    )
    jsv_samples: int = Field(32, ge=1)
    jsv_mode: Literal["eval", "train"] = "eval"
    ta_epochs: int | None = Field(
        None, ge=1, description="N of trainability accuracy; default: the first LR stage"
    )
    ta_cosine_fraction: float = Field(0.25, gt=0, le=1)


_KNOB = Literal["auto", "on", "off"]


class SpeedCfg(_Cfg):
    """The fast path's knobs (``auto``: on for CUDA, off elsewhere). None of them is part of
    the run id: they change how a step runs, never what it computes (bf16 is ``precision``,
    which is). The result record stores them under ``speed`` with what was actually used."""

    compile: _KNOB = Field("auto", description="torch.compile the train step")
    cuda_graphs: _KNOB = Field("auto", description="CUDA graphs (compile mode reduce-overhead)")
    channels_last: _KNOB = Field("auto", description="channels_last weights and inputs")
    fused_sgd: _KNOB = Field("auto", description="torch.optim.SGD(fused=True)")
    eval_batch_size: int | None = Field(
        None, gt=0, description="evaluation batch; None: data.eval_batch_size (>= 2048 on CUDA)"
    )

    @field_validator("compile", "cuda_graphs", "channels_last", "fused_sgd", mode="before")
    @classmethod
    def _yaml_bool(cls, v: Any) -> Any:
        """YAML reads a bare ``on`` / ``off`` as true / false."""
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v


class LogCfg(_Cfg):
    """Experiment trackers the run's metrics also go to (:mod:`prunebench.loggers`). Not
    part of the run id: loggers only read metrics, they never change results."""

    to: list[str] = Field(
        default_factory=list, description="loggers: tensorboard, mlflow, wandb or a registered name"
    )
    dir: str | None = Field(
        None, description="TensorBoard event files under <dir>/<run id>; None: <out>/tensorboard"
    )
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; None: file:<out>/mlruns"
    )
    project: str = Field("prunebench", description="MLflow experiment / W&B project")
    wandb_mode: Literal["online", "offline", "disabled"] | None = Field(
        None, description="W&B mode; None: $WANDB_MODE or online"
    )

    @field_validator("to", mode="before")
    @classmethod
    def _one_name(cls, v: Any) -> Any:
        """``log: {to: tensorboard}`` is one logger."""
        return [v] if isinstance(v, str) else v


class Recipe(_Cfg):
    name: str | None = Field(None, description="a label; not part of the id")
    seed: int = 0
    data: DataCfg = Field(default_factory=DataCfg)
    model: ModelCfg = Field(default_factory=ModelCfg)
    pretrain: PretrainCfg | None = Field(default_factory=PretrainCfg)
    base_model: str | None = Field(None, description="a checkpoint to start from instead")
    prune: PruneCfg | None = Field(default_factory=PruneCfg)
    retrain: RetrainCfg | None = Field(default_factory=RetrainCfg)
    measure: MeasureCfg = Field(default_factory=MeasureCfg)
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16: autocast matmuls/convs to bfloat16 (fast on GPUs)"
    )
    plugins: list[str] = Field(
        default_factory=list,
        description="modules or .py files imported first (they register criteria, models...)",
    )
    device: str = Field("auto", description="auto|cpu|cuda[:N]; not part of the id")
    speed: SpeedCfg = Field(
        default_factory=SpeedCfg, description="fast-path knobs; not part of the id"
    )
    log: LogCfg = Field(
        default_factory=LogCfg, description="experiment trackers; not part of the id"
    )

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("plugins"):
            load_plugins(values["plugins"])
        if isinstance(values, dict) and "finetune" in values:
            if "retrain" in values:
                raise ValueError("give 'retrain' or its alias 'finetune', not both")
            values = dict(values)
            values["retrain"] = values.pop("finetune")
        return values

    @model_validator(mode="after")
    def _base(self) -> Recipe:
        if self.base_model is not None and self.pretrain is not None:
            raise ValueError("give 'pretrain' or 'base_model', not both (set pretrain: null)")
        if self.retrain is not None and self.retrain.budget is not None:
            if self.pretrain is None:
                raise ValueError("retrain.budget (Scratch-E/B) needs the pretrain section's "
                                 "epochs")
            if self.pretrain.epochs < 1:
                raise ValueError(f"retrain.budget {self.retrain.budget} is a multiple of the "
                                 f"dense epochs K1: needs pretrain.epochs >= 1, got "
                                 f"{self.pretrain.epochs}")
        if self.prune is not None and self.prune.schedule == "imp" and self.pretrain is None:
            raise ValueError("prune.schedule imp rewinds into pretraining: needs pretrain")
        if self.prune and self.prune.at_epoch is not None:
            if self.pretrain is None:
                raise ValueError("prune.at_epoch needs a pretrain section")
            if self.prune.at_epoch > self.pretrain.epochs:
                raise ValueError(
                    f"prune.at_epoch {self.prune.at_epoch} is beyond pretrain.epochs "
                    f"{self.pretrain.epochs}"
                )
        return self

    # -- identity -------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """The normalised recipe that defines results: non-default fields only."""
        full = self.model_dump(mode="json")
        defaults = Recipe().model_dump(mode="json")
        for key in _NOT_IN_ID:
            _pop_path(full, key)
            _pop_path(defaults, key)
        return diff(full, defaults)

    def short_hash(self) -> str:
        return recipe_hash(self.identity())

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


_NOT_IN_ID = ("name", "device", "data.data_dir", "plugins", "speed", "log")


def default_values(cls: type[BaseModel] = Recipe) -> dict[str, Any]:
    """The defaults of a recipe section (``Recipe``: the whole recipe) as the JSON dict
    ``cls().model_dump(mode="json")`` gives, read off the field declarations without running
    validators: readers of stored runs (``compare``, ``report``) get them without loading
    the pruning registry and torch behind it. ``tests/test_recipe.py`` checks the two agree.
    """
    out: dict[str, Any] = {}
    for name, f in cls.model_fields.items():
        factory = f.default_factory
        if isinstance(factory, type) and issubclass(factory, BaseModel):
            out[name] = default_values(factory)
        else:
            value = f.get_default(call_default_factory=True)
            out[name] = value.model_dump(mode="json") if isinstance(value, BaseModel) \
                else copy.deepcopy(value)
    return out


def load_plugins(plugins: list[str]) -> None:
    """Import plugin modules (dotted names) or files (``path/to/file.py``).

    A file is imported again whenever its content differs from the version this process
    last imported (an edited plugin: its registrations replace the old ones, and its new
    source hash changes the run ids, see :func:`prunebench.registry.code_of`); unchanged, it
    is imported once. Dotted modules are imported once (Python's import cache).
    """
    import importlib
    import importlib.util
    import sys

    for item in plugins:
        if item.endswith(".py"):
            path = Path(item).resolve()
            name = f"prunebench_plugin_{path.stem}_{recipe_hash(str(path), 8)}"
            if not path.is_file():
                if name in sys.modules:
                    continue
                raise ValueError(f"plugin file {item!r} does not exist")
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            loaded = sys.modules.get(name)
            if loaded is not None and getattr(loaded, "__prunebench_sha256__", None) == digest:
                continue
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            module.__prunebench_sha256__ = digest  # type: ignore[attr-defined]
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                if loaded is not None:
                    sys.modules[name] = loaded
                else:
                    sys.modules.pop(name, None)
                raise
        else:
            try:
                importlib.import_module(item)
            except ImportError as exc:
                raise ValueError(f"plugin module {item!r} cannot be imported: {exc}") from None


def _pop_path(d: dict[str, Any], dotted: str) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        d = d.get(p) or {}
    if isinstance(d, dict):
        d.pop(last, None)


def diff(value: Any, default: Any) -> Any:
    """The parts of ``value`` that differ from ``default`` (nested dicts)."""
    if isinstance(value, dict) and isinstance(default, dict):
        out = {}
        for k, v in value.items():
            if k in default and default[k] == v:
                continue
            out[k] = diff(v, default.get(k)) if k in default else v
        return out
    return value


def recipe_hash(obj: Any, length: int = 12) -> str:
    """A short, stable content hash of a JSON-able object (sorted keys)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


# -- loading, overrides ---------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """A ``--set`` value: YAML scalars/lists/maps, but LR strings like '0:0.1' stay strings
    (so does text YAML cannot read, e.g. an impossible date like ``2001-02-30``)."""
    try:
        value = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError):
        return text
    if isinstance(value, int | float) and ":" in text:  # YAML 1.1 sexagesimal
        return text
    return value


def set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict, creating sections; ``finetune`` maps to ``retrain``."""
    if not isinstance(dotted, str):
        raise RecipeError(f"bad override key {_short(dotted)}: expected section.field text")
    if not isinstance(d, dict):
        raise RecipeError(f"cannot set {dotted!r}: the recipe is not a mapping")
    keys = dotted.split(".")
    if not all(keys):
        raise RecipeError(f"bad override key {dotted!r}: expected section.field, e.g. retrain.lr")
    if keys[0] == "finetune":
        keys[0] = "retrain"
    node = d
    for k in keys[:-1]:
        nxt = node.get(k)
        if nxt is None:
            nxt = node[k] = {}
        if not isinstance(nxt, dict):
            raise RecipeError(f"bad override key {dotted!r}: {k!r} is not a section")
        node = nxt
    node[keys[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise RecipeError(f"a recipe must be a mapping of sections, got {type(raw).__name__}")
    try:
        raw = copy.deepcopy(raw)
    except RecursionError:
        raise RecipeError("the recipe is nested too deeply") from None
    if "finetune" in raw and "retrain" not in raw:
        raw["retrain"] = raw.pop("finetune")
    for item in overrides or []:
        if not isinstance(item, str):
            raise RecipeError(f"bad override {_short(item)}: expected KEY=VALUE text")
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"bad override {item!r}: expected KEY=VALUE, e.g. retrain.lr=0:0.001")
        set_path(raw, key.strip(), parse_value(value.strip()))
    return raw


def build_recipe(raw: dict[str, Any], source: str = "recipe") -> Recipe:
    """Validate a dict into a Recipe; errors become one-line RecipeErrors naming the field.

    Only :class:`~prunebench.errors.PrunebenchError` subclasses come out, whatever ``raw``
    holds (a hypothesis test feeds it random values)."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping of sections, "
                          f"got {type(raw).__name__}")
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        err = errors[0]
        loc = _loc(err["loc"])
        msg = " ".join(str(err["msg"]).removeprefix("Value error, ").split())
        got = err.get("input")
        shown = "" if isinstance(got, dict) else f" (got {_short(got)})"
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise RecipeError(f"{source}: {loc}: {msg}{shown}{more}") from None
    except PrunebenchError:
        raise
    except RecursionError:
        raise RecipeError(f"{source}: the recipe is nested too deeply") from None
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError,
            ImportError) as exc:  # a validator hit a value of a type it did not expect
        text = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise RecipeError(f"{source}: invalid recipe: {text}") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A recipe file's mapping. Missing, unreadable, binary (not UTF-8), empty or non-YAML
    files are one-line :class:`RecipeError` s (an empty file would otherwise silently start
    a default 200-epoch run)."""
    try:
        path = Path(path)
        exists = path.is_file()
        kind = ("a directory" if path.is_dir() else "not a regular file (a device, a pipe)"
                if path.exists() else None) if not exists else None
    except (TypeError, ValueError):
        raise RecipeError(f"recipe file {_short(path)} is not a valid path") from None
    except OSError as exc:  # a name too long, a folder we may not look into
        raise RecipeError(f"recipe file {str(path)!r} cannot be read: "
                          f"{exc.strerror or exc}") from None
    if kind is not None:
        raise RecipeError(f"recipe file {str(path)!r} is {kind}: expected a YAML recipe "
                          "file (e.g. examples/tiny.yaml)")
    if not exists:
        raise RecipeError(f"recipe file {str(path)!r} does not exist")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RecipeError(f"recipe file {str(path)!r} cannot be read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RecipeError(f"recipe file {str(path)!r} is not a text file (not UTF-8): "
                          "expected a YAML recipe") from None
    if "\x00" in text:
        raise RecipeError(f"recipe file {str(path)!r} is a binary file (it holds NUL bytes): "
                          "expected a YAML recipe")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise RecipeError(f"recipe file {str(path)!r} is not valid YAML: {first}") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a date like 2001-02-30
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise RecipeError(f"recipe file {str(path)!r} is not valid YAML: {first}") from None
    except RecursionError:
        raise RecipeError(f"recipe file {str(path)!r} is nested too deeply") from None
    if raw is None:
        raise RecipeError(f"recipe file {str(path)!r} is empty: a recipe needs at least "
                          "its sections (see examples/tiny.yaml)")
    if not isinstance(raw, dict):
        raise RecipeError(
            f"recipe file {str(path)!r} must hold a mapping, got {type(raw).__name__}"
        )
    return raw


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    return build_recipe(apply_overrides(read_yaml(path), overrides), source=str(path))
