"""Short, human labels of stored runs: what ``runs``, ``compare`` and ``report`` print.

Never JSON: a run is named by its study variant (the row label of a study manifest in the
store) when it has one, else by a short method summary (criterion, schedule, granularity,
init); its rate, retraining LR schedule and seed are separate fields.

* :func:`method_summary` -- ``"l1"``, ``"l1+scratch-E"``, ``"taylor_fo/greg"``
* :func:`ratio_text`     -- ``"49.8% / 2.21x"`` (param sparsity / speedup) or the layer
  ratios shortened (``"conv*:0.5,fc1:0.5"`` -> ``"0.5"``)
* :func:`lr_text`        -- the effective retraining LR schedule (standard form)
* :func:`study_index`    -- run id -> the study cells (study, preset, variant, column, seed)
* :func:`variants_of` / :func:`studies_of` -- a run's row labels / study tables (filters)
* :func:`ratio_value` / :func:`lr_value`   -- the numbers ``runs --sort`` orders by
* :func:`plain`          -- a text with JSON objects rewritten as ``k=v`` lists
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: longest a shortened value may be (ids are never shortened)
SHORT = 28


def shorten(text: str, width: int = SHORT) -> str:
    text = str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def method_summary(recipe: dict[str, Any]) -> str:
    """Criterion, non-default schedule / granularity / scheme, and the retraining init."""
    from prunebench.compare.fingerprint import method_label

    return method_label(recipe or {})


def _ratios(layers: Any) -> list[str]:
    if layers is None:
        return []
    if isinstance(layers, bool):
        return [str(layers)]
    if isinstance(layers, int | float):
        return [f"{layers:g}"]
    if isinstance(layers, list | tuple):
        return [r for x in layers for r in _ratios(x)]
    if isinstance(layers, dict):
        return [r for x in layers.values() for r in _ratios(x)]
    out = []
    for part in str(layers).split(","):
        value = part.rsplit(":", 1)[-1].strip()
        try:
            out.append(f"{float(value):g}")
        except ValueError:
            out.append(value)
    return out


def layers_text(layers: Any) -> str:
    """The layer ratios in short: the distinct ratios (``"0.5"``, ``"0.5/0.3"``)."""
    ratios = list(dict.fromkeys(_ratios(layers)))
    return shorten("/".join(ratios)) if ratios else "-"


def ratio_text(recipe: dict[str, Any], record: Any = None) -> str:
    """``"49.8% / 2.21x"`` from the record (masked runs: sparsity only), else the layer
    ratios shortened; ``"dense"`` for a run without pruning."""
    prune = (recipe or {}).get("prune")
    if not prune:
        return "dense"
    pruned = getattr(record, "pruned", None)
    if pruned is not None:
        sp, su = pruned.rate_sparsity, pruned.rate_speedup
        if sp is not None:
            return f"{sp:.1f}%" + ("" if su is None else f" / {su:.2f}x")
    target = prune.get("target_speedup") or prune.get("target_param_sparsity")
    if target:
        return (f"{prune['target_speedup']:g}x" if prune.get("target_speedup")
                else f"{prune['target_param_sparsity']:g}%")
    return "PR " + layers_text(prune.get("layers"))


def lr_text(recipe: dict[str, Any], record: Any = None) -> str:
    """The effective retraining LR schedule (the record's, else the recipe's)."""
    eff = getattr(record, "retrain", None)
    if eff is not None and eff.lr:
        return str(eff.lr)
    retrain = (recipe or {}).get("retrain")
    if not retrain:
        return "-"
    return str(retrain.get("lr") or "-")


def init_text(recipe: dict[str, Any], record: Any = None) -> str:
    """``inherit``, ``scratch-E``, ``orthp``... (the effective init and Scratch budget)."""
    eff = getattr(record, "retrain", None)
    retrain = (recipe or {}).get("retrain") or {}
    if not retrain and eff is None:
        return "-"
    init = (eff.init if eff is not None and eff.init else None) or retrain.get("init") or "inherit"
    budget = (eff.budget if eff is not None and eff.budget else None) or retrain.get("budget")
    return f"{init}-{budget}" if budget and init != "inherit" else str(init)


@dataclass(frozen=True)
class StudyCell:
    """Where a run appears in a study manifest."""

    study: str
    preset: str
    variant: str
    column: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.study}-{self.preset}" if self.preset else self.study


def study_index(out: str | os.PathLike[str]) -> dict[str, list[StudyCell]]:
    """``{run id: [StudyCell, ...]}`` from ``<out>/studies/*.json`` (unreadable files and
    foreign JSON are skipped); a study's full-length dense runs get the variant
    ``"dense (reference)"``."""
    folder = Path(out) / "studies"
    index: dict[str, list[StudyCell]] = {}
    if not folder.is_dir():
        return index
    for path in sorted(folder.glob("*.json")):
        try:
            m = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(m, dict) or not isinstance(m.get("cells"), list):
            continue
        study, preset = str(m.get("study") or path.stem), str(m.get("preset") or "")
        for c in m["cells"]:
            if isinstance(c, dict) and c.get("run"):
                cell = StudyCell(study, preset, str(c.get("row")), str(c.get("column")),
                                 int(c.get("seed") or 0))
                if cell not in index.setdefault(str(c["run"]), []):
                    index[str(c["run"])].append(cell)
        for seed, rid in (m.get("dense_runs") or {}).items():
            cell = StudyCell(study, preset, "dense (reference)", "-", int(seed))
            if cell not in index.setdefault(str(rid), []):
                index[str(rid)].append(cell)
    return index


def variants_of(cells: list[StudyCell] | None) -> list[str]:
    """Every distinct row label a run has in the studies, in manifest order: what a filter
    on the variant matches (a label may itself hold `` | ``, so never the joined text)."""
    return list(dict.fromkeys(c.variant for c in cells or []))


def studies_of(cells: list[StudyCell] | None) -> list[str]:
    """Every distinct study table (``<study>-<preset>``) a run belongs to."""
    return list(dict.fromkeys(c.key for c in cells or []))


def variant_of(cells: list[StudyCell] | None) -> str | None:
    """The row label a run has in the studies (several distinct ones joined by `` | ``):
    for display only; filter on :func:`variants_of`."""
    return " | ".join(variants_of(cells)) or None


def study_of(cells: list[StudyCell] | None) -> str | None:
    """The study tables of a run joined by ``, `` (display; filter on :func:`studies_of`)."""
    return ", ".join(studies_of(cells)) or None


def ratio_value(recipe: dict[str, Any], record: Any = None) -> float | None:
    """The number :func:`ratio_text` shows first (param sparsity in %, the rate S1
    compares), for sorting: 0 for a run without pruning; None while it is unknown (no
    finished prune stage)."""
    if not (recipe or {}).get("prune"):
        return 0.0
    pruned = getattr(record, "pruned", None)
    value = getattr(pruned, "rate_sparsity", None)
    return float(value) if isinstance(value, int | float) else None


def lr_value(text: Any) -> float | None:
    """The initial LR of a schedule text (:func:`lr_text`), for sorting; None without one."""
    from prunebench.errors import PrunebenchError
    from prunebench.schedule import parse_schedule

    if not isinstance(text, str) or text in ("", "-"):
        return None
    try:
        return float(parse_schedule(text).initial_lr)
    except (PrunebenchError, ValueError, TypeError):
        return None


_JSON_OBJ = re.compile(r"[\[{][^\[\]{}]*[\]}]")


def _plain_value(v: Any) -> str:
    if isinstance(v, dict):
        return ",".join(f"{k}={_plain_value(x)}" for k, x in v.items()) or "-"
    if isinstance(v, list):
        return "/".join(_plain_value(x) for x in v) or "-"
    return "-" if v is None else str(v)


def plain(text: str) -> str:
    """``'mlp{"depth":3}'`` -> ``'mlp(depth=3)'``: JSON objects and lists as ``k=v`` text
    (innermost first, so nested ones unfold too); text that is not JSON stays."""
    for _ in range(8):
        changed = False

        def sub(m: re.Match[str]) -> str:
            nonlocal changed
            try:
                v = json.loads(m.group(0))
            except ValueError:
                return m.group(0).replace("{", "(").replace("}", ")")
            changed = True
            return f"({_plain_value(v)})" if isinstance(v, dict) else f"[{_plain_value(v)}]"

        new = _JSON_OBJ.sub(sub, text)
        if new == text or not changed:
            text = new
            break
        text = new
    return text.replace("{", "(").replace("}", ")")
