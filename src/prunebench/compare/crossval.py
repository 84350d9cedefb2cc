"""Recipe cross-validation (the paper's practical rule).

Two methods A and B were published with retraining recipes FT_A and FT_B. Run A+FT_A,
B+FT_A, A+FT_B and B+FT_B on one base recipe: if one method wins under both recipes it
is the better one ("consistent winner: A"); if not, pruning and retraining interact and
the higher result weighs more ("inconsistent: the higher result weighs more").

Spec syntax of METHOD (a ``prune`` section) and FT (a ``retrain`` section), either:

* a YAML file holding the section (a mapping of its fields), or a whole recipe whose
  ``prune:`` / ``retrain:`` (``finetune:``) section is taken;
* ``key=value`` pairs separated by commas, keys with or without the section prefix:
  ``prune.method=l1`` / ``method=taylor_fo,layers=0.3`` / ``lr=0:0.01,60:0.001,epochs=90``.
  A comma splits only before a ``key=``, so LR strings and layer patterns keep theirs.

Each spec is merged onto the base recipe's section (the base sets what A and B share,
e.g. ``prune.layers``). ``seeds: N`` in the base recipe repeats every cell over N seeds
(means are compared, with Welch p-values).
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

from prunebench.compare.errors import CompareError
from prunebench.compare.stats import summarize, welch
from prunebench.recipe import build_recipe, parse_value, read_yaml

_SPLIT = re.compile(r",(?=\s*[A-Za-z_][\w.]*\s*=)")


def parse_section(spec: str, section: str) -> dict[str, Any]:
    """A ``prune`` / ``retrain`` section from a YAML file path or ``k=v,...`` pairs."""
    aliases = {section} | ({"finetune"} if section == "retrain" else set())
    text = spec.strip()
    if not text:
        raise CompareError(f"empty {section} spec: give a YAML file or key=value pairs")
    if "=" not in text or Path(text).is_file():
        raw = read_yaml(text)
        found = [k for k in aliases if isinstance(raw.get(k), dict)]
        return dict(raw[found[0]]) if found else raw
    out: dict[str, Any] = {}
    for item in _SPLIT.split(text):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CompareError(f"bad {section} spec item {item!r}: expected key=value")
        head, _, rest = key.partition(".")
        if rest and head in aliases:
            key = rest
        elif rest and head in ("prune", "retrain", "finetune", "data", "model", "pretrain"):
            raise CompareError(f"{section} spec key {key!r} belongs to section {head!r}")
        node = out
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = parse_value(value.strip())
    return out


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def crossval(
    a: str | dict[str, Any],
    ft_a: str | dict[str, Any],
    b: str | dict[str, Any],
    ft_b: str | dict[str, Any],
    *,
    base: str | os.PathLike[str] | dict[str, Any] | None = None,
    out: str | os.PathLike[str] = "runs",
    reporter: Any = None,
    device: str | None = None,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Run the four cells and return the verdict with the numbers (JSON-able)."""
    from prunebench.pipeline import run
    from prunebench.studies.grid import expand_grid

    raw = {} if base is None else base if isinstance(base, dict) else read_yaml(base)
    raw = copy.deepcopy(raw)
    if "finetune" in raw and "retrain" not in raw:
        raw["retrain"] = raw.pop("finetune")
    if raw.get("grid"):
        raise CompareError("crossval takes one base recipe: remove its grid: section")
    if isinstance(raw.get("retrain"), dict) and "calibrate" in raw["retrain"]:
        raise CompareError("crossval does not calibrate: remove retrain.calibrate")
    specs = {
        "A": a if isinstance(a, dict) else parse_section(a, "prune"),
        "B": b if isinstance(b, dict) else parse_section(b, "prune"),
        "FT_A": ft_a if isinstance(ft_a, dict) else parse_section(ft_a, "retrain"),
        "FT_B": ft_b if isinstance(ft_b, dict) else parse_section(ft_b, "retrain"),
    }
    for name in ("FT_A", "FT_B"):
        if "calibrate" in specs[name]:
            raise CompareError(f"{name}: crossval does not calibrate")
    cells = []
    for m in ("A", "B"):
        for ft in ("FT_A", "FT_B"):
            r = copy.deepcopy(raw)
            r["prune"] = _merge(r.get("prune") or {}, specs[m])
            r["retrain"] = _merge(r.get("retrain") or {}, specs[ft])
            cells.append((m, ft, r))
    # validate every recipe (and seed) before running any
    plans = []
    for m, ft, r in cells:
        for _, seed_raw in expand_grid(r):
            plans.append((m, ft, build_recipe(seed_raw, source=f"{m}+{ft}")))
    acc: dict[tuple[str, str], list[float]] = {}
    ids: dict[tuple[str, str], list[str]] = {}
    for m, ft, recipe in plans:
        res = run(recipe, out, reporter=reporter, device=device, data_dir=data_dir)
        acc.setdefault((m, ft), []).append(float(res.record.test_acc))  # type: ignore[arg-type]
        ids.setdefault((m, ft), []).append(res.id)
    return verdict(acc, ids, specs)


def verdict(
    acc: dict[tuple[str, str], list[float]],
    ids: dict[tuple[str, str], list[str]] | None = None,
    specs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The cross-validation verdict from final-epoch test accuracies per (method, FT)."""
    table = []
    for (m, ft), xs in acc.items():
        s = summarize(xs)
        table.append({"method": m, "ft": ft, "test_acc": s.mean, "summary": s.to_dict(),
                      "text": s.text(), "runs": (ids or {}).get((m, ft), [])})
    winners: dict[str, str | None] = {}
    tests = {}
    for ft in ("FT_A", "FT_B"):
        w = welch(acc[("A", ft)], acc[("B", ft)])
        tests[ft] = {**w.to_dict(), "text": w.text()}
        winners[ft] = "A" if w.diff > 0 else "B" if w.diff < 0 else None
    best = max(table, key=lambda r: r["test_acc"])
    if winners["FT_A"] is not None and winners["FT_A"] == winners["FT_B"]:
        text = f"consistent winner: {winners['FT_A']} (wins under FT_A and under FT_B)"
        consistent = True
    else:
        consistent = False
        text = (f"inconsistent: the higher result weighs more "
                f"({best['method']}+{best['ft']}: {best['test_acc']:.2f})")
    return {"consistent": consistent, "winner": winners["FT_A"] if consistent else None,
            "winners": winners, "verdict": text, "highest": {
                "method": best["method"], "ft": best["ft"], "test_acc": best["test_acc"]},
            "table": table, "tests": tests, "specs": specs or {},
            "note": "final-epoch test accuracy; A/B differ only in prune, FT_A/FT_B only in "
                    "retrain; everything else is the base recipe"}
