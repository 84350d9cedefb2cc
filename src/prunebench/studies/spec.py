"""Study specifications: a base recipe, table columns, table rows, seeds, per preset.

A study file (YAML) looks like::

    name: lr-effect
    title: "Mystery 1: a larger retraining LR 'improves' pruning"
    setup: S3.2                 # the comparison setup the rows of one column share
    presets:
      cpu:
        base: {data: ..., model: ..., pretrain: ..., prune: ..., retrain: ...}
        columns: {key: prune.layers, values: [0.5, 0.8], labels: ["PR 0.5", "PR 0.8"]}
        rows:
          - {label: "L1, step, LR 0.01", set: {retrain.lr: "0:0.01,4:0.001"}}
          - {label: "Scratch (step)", set: {retrain.init: scratch, retrain.budget: E}}
        seeds: 1

Cells are rows x columns x seeds; each cell is a recipe (base + column value + row
overrides + seed), so cells that share their pretraining share one dense model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from prunebench.errors import RecipeError, StoreError
from prunebench.recipe import _loc
from prunebench.registry import Registry
from prunebench.store import check_name

#: built-in studies: name -> path of the YAML file next to this module
STUDIES: Registry[Path] = Registry("study")


#: what a refused ``seed`` key says: the seed axis is the study's (``seeds``), never a value
#: a row, a column or an override sets (it would make every seed of a cell one run)
SEED_AXIS = ("seed is the study's seed axis: give the number of seeds with seeds: N in the "
             "preset or --seeds N (seeds run from the base's seed, default 0), not a seed value")


def recipe_key(key: str) -> str:
    """A dotted recipe key as the recipe reads it (``finetune.lr`` is ``retrain.lr``)."""
    key = key.strip()
    head, dot, rest = key.partition(".")
    return ("retrain" + dot + rest) if head == "finetune" else key


def overlaps(key: str, axis: str) -> bool:
    """Whether setting ``key`` replaces the value an axis key sets: the key itself or a
    section above it (``retrain`` replaces ``retrain.lr``)."""
    key, axis = recipe_key(key), recipe_key(axis)
    return key == axis or axis.startswith(key + ".")


def _unique(labels: list[str], what: str) -> None:
    """Each label once: cells with one label are pooled by the report."""
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        if label in seen:
            raise ValueError(f"duplicate {what} label {label!r} ({what}s {seen[label] + 1} and "
                             f"{i + 1}): "
                             f"each {what} needs its own label, or the report pools their cells")
        seen[label] = i


class Row(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str
    set: dict[str, Any] = Field(default_factory=dict)

    @field_validator("set")
    @classmethod
    def _no_seed(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if isinstance(key, str) and overlaps(key, "seed"):
                raise ValueError(SEED_AXIS)
        return v


class Columns(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str
    values: list[Any] = Field(min_length=1)
    labels: list[str] | None = None

    @model_validator(mode="after")
    def _labels(self) -> Columns:
        if overlaps(self.key, "seed"):
            raise ValueError(f"columns.key {self.key!r}: {SEED_AXIS}")
        if self.labels is None:
            self.labels = [str(v) for v in self.values]
        if len(self.labels) != len(self.values):
            raise ValueError("columns.labels must have one label per value")
        _unique(self.labels, "column")
        return self


class Finding(BaseModel):
    """A finding of the paper a study tests: row ``better`` beats row ``worse`` (final-epoch
    test accuracy) in each listed column. ``better`` / ``worse`` are row labels or
    fnmatch patterns (``"*(SX-A)"``: every matching row); ``columns``: ``all`` or column
    labels (labels a preset lacks are skipped there)."""

    model_config = ConfigDict(extra="forbid")
    claim: str = Field(min_length=1)
    better: str = Field(min_length=1)
    worse: str = Field(min_length=1)
    columns: Literal["all"] | list[str] = "all"


class Preset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base: dict[str, Any]
    columns: Columns
    rows: list[Row] = Field(min_length=1)
    seeds: int = Field(1, ge=1)
    note: str | None = None
    #: the findings this preset tests, in place of the study's (its rows differ from the
    #: other presets', e.g. lr-catch-up's paper preset names the paper's PxFy rows)
    findings: list[Finding] | None = None

    @field_validator("base")
    @classmethod
    def _first_seed(cls, v: dict[str, Any]) -> dict[str, Any]:
        """``base.seed`` is the first of the study's seeds (``seed``, ``seed + 1``, ...)."""
        seed = v.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"base.seed is the first of the study's seeds: a whole number, "
                             f"got {seed!r}")
        return v

    @field_validator("rows")
    @classmethod
    def _row_labels(cls, v: list[Row]) -> list[Row]:
        _unique([r.label for r in v], "row")
        return v

    @model_validator(mode="after")
    def _rows_keep_columns(self) -> Preset:
        """A row that set the columns' key would run one recipe under every column label."""
        for r in self.rows:
            for key in r.set:
                if overlaps(key, self.columns.key):
                    raise ValueError(
                        f"row {r.label!r} sets {key!r}, which replaces the columns' key "
                        f"{self.columns.key!r}: every column of the row would run the same "
                        "recipe under another column's label")
        return self


class PresetGroup(BaseModel):
    """A preset that runs several others (e.g. ``paper``: ResNet-56/CIFAR-10 and
    VGG-19/CIFAR-100), each with its own table and manifest."""

    model_config = ConfigDict(extra="forbid")
    include: list[str] = Field(min_length=1)
    note: str | None = None


def match_rows(pattern: str, rows: list[str]) -> list[str]:
    """The row labels a finding's ``better`` / ``worse`` names: the label itself, else
    every label the fnmatch pattern matches."""
    from fnmatch import fnmatchcase

    if pattern in rows:
        return [pattern]
    return [r for r in rows if fnmatchcase(r, pattern)]


class StudySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    title: str = ""
    description: str = ""
    setup: str | None = None
    figures: list[str] = Field(default_factory=list)
    analysis: Literal["crossval"] | None = Field(
        None, description="crossval: rows are methods A and B, columns recipes FT_A and FT_B"
    )
    presets: dict[str, Preset | PresetGroup]
    findings: list[Finding] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        """Study names become file names (``<out>/studies/<name>-<preset>.json``): slugs
        only (:func:`prunebench.store.slugify`), never a path."""
        return _slug(v, "study name")

    @field_validator("presets")
    @classmethod
    def _preset_names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            _slug(name, "preset name")
        return v

    @model_validator(mode="after")
    def _analysis(self) -> StudySpec:
        for name, p in self.presets.items():
            if isinstance(p, PresetGroup):
                for sub in p.include:
                    if not isinstance(self.presets.get(sub), Preset):
                        raise ValueError(f"preset {name!r} includes {sub!r}, not a plain preset")
        tables = self.tables()
        # the study's findings must apply to at least one preset that uses them; a preset's
        # own findings to that preset
        users = [p for _, p in tables if p.findings is None]
        _check_findings(self.findings, users, "findings", "any preset")
        for name, p in tables:
            if p.findings is not None:
                _check_findings(p.findings, [p], f"presets.{name}.findings", "this preset")
        if self.analysis == "crossval":
            for name, p in tables:
                if len(p.rows) != 2 or len(p.columns.values) != 2:
                    raise ValueError(
                        f"crossval preset {name!r} needs 2 rows (A, B) and 2 columns (FT_A, FT_B)"
                    )
        return self

    def findings_for(self, preset: str) -> list[Finding]:
        """The findings a plain preset tests: its own, else the study's."""
        p = self.presets.get(preset)
        if isinstance(p, Preset) and p.findings is not None:
            return list(p.findings)
        return list(self.findings)

    def tables(self) -> list[tuple[str, Preset]]:
        """The plain presets (each one table), by name."""
        return [(n, p) for n, p in self.presets.items() if isinstance(p, Preset)]

    def resolve(self, name: str) -> list[str]:
        """The plain presets a preset name stands for (itself, or a group's members)."""
        if name not in self.presets:
            allowed = ", ".join(sorted(self.presets))
            raise RecipeError(f"study {self.name!r} has no preset {name!r}; presets: {allowed}")
        p = self.presets[name]
        return list(p.include) if isinstance(p, PresetGroup) else [name]

    def preset(self, name: str) -> Preset:
        p = self.presets.get(name)
        if isinstance(p, PresetGroup):
            raise RecipeError(
                f"preset {name!r} of study {self.name!r} groups {', '.join(p.include)}: "
                "run it with run_studies (or the CLI), or name one of them"
            )
        self.resolve(name)
        assert isinstance(p, Preset)
        return p


def _check_findings(findings: list[Finding], presets: list[Preset], where: str,
                    scope: str) -> None:
    """Each finding's ``better`` / ``worse`` names a row, and its columns a column label, of
    one of ``presets`` (none to check against: nothing to say)."""
    if not presets:
        return
    for i, f in enumerate(findings):
        for side in ("better", "worse"):
            pattern = getattr(f, side)
            if not any(match_rows(pattern, [r.label for r in p.rows]) for p in presets):
                raise ValueError(f"{where}[{i}].{side} {pattern!r} matches no row label of "
                                 f"{scope}")
        if f.columns != "all":
            labels = {c for p in presets for c in p.columns.labels or []}
            bad = [c for c in f.columns if c not in labels]
            if bad:
                raise ValueError(f"{where}[{i}].columns: {bad[0]!r} is no column label of "
                                 f"{scope} ({', '.join(sorted(labels))})")


def load_study(name_or_path: str | Path) -> StudySpec:
    """A built-in study by name, or a study YAML file."""
    path = Path(name_or_path)
    if not path.suffix and str(name_or_path) in STUDIES:
        path = STUDIES.get(str(name_or_path))
    elif not path.is_file():
        if path.suffix in (".yaml", ".yml"):
            raise RecipeError(f"study file {str(path)!r} does not exist")
        STUDIES.get(str(name_or_path))  # raises with the list of built-ins
    try:
        raw = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise RecipeError(f"study file {str(path)!r} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise RecipeError(f"study file {str(path)!r} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RecipeError(f"study file {str(path)!r} is not valid YAML: {first}") from None
    if raw is None:
        raise RecipeError(f"study file {str(path)!r} is empty")
    try:
        return StudySpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        # a preset is a Preset or a PresetGroup: pydantic names the union member in the
        # location (``Preset``, ``function-after[...]``), which is no key of the file
        loc = _loc(tuple(p for p in err["loc"] if not (isinstance(p, str) and (
            p in ("Preset", "PresetGroup") or p.startswith("function-")))))
        msg = " ".join(str(err["msg"]).removeprefix("Value error, ").split())
        raise RecipeError(f"study {str(path)!r}: {loc}: {msg}") from None


def _slug(name: str, what: str) -> str:
    try:
        return check_name(name, what)
    except StoreError as exc:
        raise ValueError(str(exc)) from None


for _file in sorted(Path(__file__).parent.glob("*.yaml")):
    STUDIES.register(_file.stem.replace("_", "-"), doc=yaml.safe_load(
        _file.read_text()).get("title", ""))(_file)
