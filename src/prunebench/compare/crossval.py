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

A verdict needs comparable cells. Every recipe is validated before any runs, and A and B
are refused up front (one-line :class:`CompareError`, nothing written) when their pruned
rates can be computed without training (one-shot layerwise filter pruning) and differ.
After the runs, the finished cells are fingerprinted: under each recipe, A and B must meet
:data:`REQUIRED` (S3.2: same dataset, network and rate, same base model, same retraining),
matched seed by seed, or no winner is declared (``exit_code`` 3: the setup not met and
why). A cell that diverged or failed is listed under ``not_done`` (cell, seed, run, phase,
epoch, reason) and no winner is declared either (``exit_code`` 4); the other cells still
run.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

from prunebench.compare.errors import CompareError
from prunebench.compare.setups import CHAIN, DESCRIPTION, SETUPS, close, setup_label
from prunebench.compare.stats import summarize, welch
from prunebench.recipe import build_recipe, parse_value, read_yaml

#: the setup A and B must meet under each retraining recipe (the paper recommends S3.2)
REQUIRED = "S3.2"
METHODS = ("A", "B")
FTS = ("FT_A", "FT_B")
#: exit codes of the crossval command: a verdict; the setup is not met; a cell did not finish
EXIT_OK, EXIT_NOT_MET, EXIT_NOT_DONE = 0, 3, 4

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
    """Run the four cells and return the verdict with the numbers (JSON-able); see the
    module docstring for what is checked. ``exit_code`` in the result: 0 (a verdict), 3
    (A and B do not meet :data:`REQUIRED` under a recipe), 4 (a cell diverged or failed)."""
    from prunebench.pipeline import run_cell, validate_recipes
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
    for name in FTS:
        if "calibrate" in specs[name]:
            raise CompareError(f"{name}: crossval does not calibrate")
    cells = []
    for m in METHODS:
        for ft in FTS:
            r = copy.deepcopy(raw)
            r["prune"] = _merge(r.get("prune") or {}, specs[m])
            r["retrain"] = _merge(r.get("retrain") or {}, specs[ft])
            cells.append((m, ft, r))
    # every recipe (and seed) is built, then checked against the model and the data, before
    # any runs: a bad cell is one line and nothing is written
    plans = []
    for m, ft, r in cells:
        for _, seed_raw in expand_grid(r):
            plans.append((m, ft, build_recipe(seed_raw, source=f"{m}+{ft}")))
    many = len({recipe.seed for _, _, recipe in plans}) > 1
    recipes = validate_recipes(
        [(f"crossval cell {m}+{ft}" + (f" seed {recipe.seed}" if many else ""), recipe)
         for m, ft, recipe in plans], device=device, data_dir=data_dir)
    first: dict[str, Any] = {}
    for (m, _, _), recipe in zip(plans, recipes, strict=True):
        first.setdefault(m, recipe)
    check_rates(first["A"], first["B"])  # rates known before training: refused up front
    results = [(m, ft, recipe.seed, run_cell(recipe, out, reporter=reporter))
               for (m, ft, _), recipe in zip(plans, recipes, strict=True)]
    return report(results, out, specs)


# -- comparability --------------------------------------------------------------------------


def predicted_rate(ctx: Any) -> tuple[float, float] | None:
    """``(param sparsity %, speedup)`` the prune section of ``ctx.recipe`` will reach, when
    that is known without training: one-shot filter pruning with the layerwise scheme and
    no target removes ``ceil(ratio * n)`` filters per layer whatever the weights and the
    criterion, so pruning a freshly built copy by L1 gives the same shapes. ``None`` for
    anything else (global scheme, targets, regularised or weight pruning): then only the
    finished runs tell."""
    from prunebench.pruning import StructuredSpec, prune_model, prune_summary

    cfg = ctx.recipe.prune
    if cfg is None:
        return 0.0, 1.0
    if not _predictable(ctx.recipe):
        return None
    dense = ctx.build_dense()
    pruned = copy.deepcopy(dense)
    spec = StructuredSpec(method="l1", layers=cfg.layers, skip=list(cfg.skip),
                          scheme="layerwise", coupled=cfg.coupled)
    prune_model(pruned, spec, ctx.example, seed=ctx.recipe.seed, input_shape=ctx.input_shape)
    s = prune_summary(dense, pruned, ctx.input_shape)
    return float(s["param_sparsity"]), float(s["speedup"])


def check_rates(a: Any, b: Any) -> None:
    """Refuse (one-line :class:`CompareError`) methods A and B (validated recipes) whose
    rates are known before training and differ: S1 could not hold, so the four runs could
    give no verdict. Rates that cannot be known up front are checked after the runs."""
    import dataclasses

    import torch

    from prunebench.context import prepare

    if not all(_predictable(r) for r in (a, b)):
        return
    ctx = prepare(a, torch.device("cpu"))
    ra = predicted_rate(ctx)
    rb = predicted_rate(dataclasses.replace(ctx, recipe=b))
    if ra is None or rb is None or close(ra[0], rb[0]) or close(ra[1], rb[1]):
        return
    raise CompareError(
        f"crossval: A and B prune to different rates (A: {ra[0]:.2f}% param sparsity, "
        f"{ra[1]:.2f}x speedup; B: {rb[0]:.2f}%, {rb[1]:.2f}x): A vs B could not meet S1 "
        f"({DESCRIPTION['S1']}, within 2%), so no verdict could be given; prune both to "
        f"one rate (e.g. the same prune.layers)")


def _predictable(recipe: Any) -> bool:
    """Whether :func:`predicted_rate` knows the rate of ``recipe`` before training."""
    cfg = recipe.prune
    return cfg is None or (
        cfg.granularity == "filter" and cfg.schedule == "oneshot" and cfg.scheme == "layerwise"
        and cfg.target_speedup is None and cfg.target_param_sparsity is None)


def _unfinished(m: str, ft: str, seed: int, res: Any) -> dict[str, Any]:
    info = res.result.get("diverged") or {}
    return {"cell": f"{m}+{ft}", "method": m, "ft": ft, "seed": seed, "run": res.id,
            "status": res.status, "phase": info.get("phase"), "epoch": info.get("epoch"),
            "reason": res.result.get("error") or info.get("reason") or res.status}


def report(results: list[tuple[str, str, int, Any]], out: str | os.PathLike[str],
           specs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The verdict from ``[(method, ft, seed, RunResult), ...]``: finished runs are
    fingerprinted from the store (their setups are checked), the others are ``not_done``."""
    from prunebench.compare.fingerprint import fingerprint
    from prunebench.store import RunStore

    store = RunStore(out)
    acc: dict[tuple[str, str], list[float]] = {}
    ids: dict[tuple[str, str], list[str]] = {}
    fps: dict[tuple[str, str], list[Any]] = {}
    not_done = []
    for m, ft, seed, res in results:
        ids.setdefault((m, ft), []).append(res.id)
        test = res.result.get("test_acc")
        if res.status != "done" or test is None:
            not_done.append(_unfinished(m, ft, seed, res))
            continue
        acc.setdefault((m, ft), []).append(float(test))
        fps.setdefault((m, ft), []).append(fingerprint(store.load(res.id)))
    return verdict(acc, ids, specs, fps=fps, not_done=not_done)


def cell_fingerprints(out: str | os.PathLike[str], ids: dict[tuple[str, str], list[str]]
                      ) -> dict[tuple[str, str], list[Any]]:
    """The fingerprints of the (finished) runs of each ``(method, ft)`` cell of a store, for
    :func:`verdict`'s ``fps`` (a run that is not finished is a one-line error)."""
    from prunebench.compare.fingerprint import fingerprint
    from prunebench.store import RunStore

    store = RunStore(out)
    return {key: [fingerprint(store.load(rid)) for rid in rids] for key, rids in ids.items()}


def _cell_setups(xs: list[Any], ys: list[Any], required: str) -> dict[str, Any] | None:
    """The setups A and B meet under one recipe: every matched-seed pair's (the base model
    depends on the seed; with no common seed, the first runs: their bases differ, so S2
    fails); ``None`` when a side has no finished run."""
    from prunebench.compare.setups import differences, satisfied_setups

    if not xs or not ys:
        return None
    by_seed = {f.seed: f for f in ys}
    pairs = [(x, by_seed[x.seed]) for x in xs if x.seed in by_seed] or [(xs[0], ys[0])]
    sat = set(SETUPS)
    diffs: list[str] = []
    for x, y in pairs:
        sat &= set(satisfied_setups(x, y))
        diffs.extend(d for d in differences(x, y) if d not in diffs)
    held = [s for s in SETUPS if s in sat]
    chain = CHAIN[:CHAIN.index(required) + 1] if required in CHAIN else (required,)
    missing = next((s for s in chain if s not in held), None)  # the first setup not met
    return {"satisfied": held, "label": setup_label(held), "met": missing is None,
            "missing": missing, "differences": diffs, "pairs": len(pairs)}


def _not_done_text(d: dict[str, Any]) -> str:
    return f"{d['cell']} seed {d['seed']} (run {d['run']}) {d['status']}: {d['reason']}"


def verdict(
    acc: dict[tuple[str, str], list[float]],
    ids: dict[tuple[str, str], list[str]] | None = None,
    specs: dict[str, Any] | None = None,
    *,
    fps: dict[tuple[str, str], list[Any]] | None = None,
    not_done: list[dict[str, Any]] | None = None,
    required: str = REQUIRED,
) -> dict[str, Any]:
    """The cross-validation verdict from final-epoch test accuracies per (method, FT) of the
    finished runs.

    ``fps``: the fingerprints of those runs per cell (:func:`cell_fingerprints`); A and B
    must meet ``required`` under each recipe (matched seeds), else no verdict (``exit_code``
    3). ``None`` skips that check: the result then says ``setups: null`` and its note says
    the setups were not checked. ``not_done``: runs that diverged or failed (``cell``,
    ``seed``, ``run``, ``status``, ``phase``, ``epoch``, ``reason``): never ranked, and no
    verdict while any is listed (``exit_code`` 4)."""
    not_done = list(not_done or [])
    table = []
    for m in METHODS:
        for ft in FTS:
            xs = acc.get((m, ft)) or []
            bad = [d for d in not_done if (d.get("method"), d.get("ft")) == (m, ft)]
            if not xs and not bad:
                raise CompareError(f"crossval: cell {m}+{ft} has no result")
            s = summarize(xs) if xs else None
            text = s.text() if s is not None else ""
            if bad:
                kinds = sorted({d.get("status", "diverged") for d in bad})
                what = f"{len(bad)} {'/'.join(kinds)}"
                text = f"{text} + {what}" if text else what
            table.append({"method": m, "ft": ft, "test_acc": s.mean if s else None,
                          "summary": s.to_dict() if s else None, "text": text,
                          "runs": (ids or {}).get((m, ft), []), "not_done": len(bad)})
    setups = None if fps is None else {
        ft: _cell_setups(fps.get(("A", ft)) or [], fps.get(("B", ft)) or [], required)
        for ft in FTS}
    unmet = [ft for ft in FTS if setups is not None and setups[ft] is not None
             and not setups[ft]["met"]]
    tests: dict[str, dict[str, Any]] = {}
    diffs: dict[str, float] = {}
    for ft in FTS:
        xa, xb = acc.get(("A", ft)), acc.get(("B", ft))
        if not xa or not xb:
            missing = " and ".join(f"{m}+{ft}" for m, x in (("A", xa), ("B", xb)) if not x)
            tests[ft] = {"diff": None, "t": None, "df": None, "p": None, "significant": None,
                         "text": f"not compared: {missing} did not finish"}
            continue
        w = welch(xa, xb)
        diffs[ft] = w.diff
        text = w.text()
        if ft in unmet:
            assert setups is not None and setups[ft] is not None
            text += f"; not comparable: {setups[ft]['missing']} is not met"
        tests[ft] = {**w.to_dict(), "text": text}
    winners: dict[str, str | None] = {ft: None for ft in FTS}
    consistent = False
    highest = None
    if not_done:
        code = EXIT_NOT_DONE
        total = sum(len(x) for x in acc.values()) + len(not_done)
        text = (f"no verdict: {len(not_done)} of {total} runs did not finish (never ranked): "
                + "; ".join(_not_done_text(d) for d in not_done))
    elif unmet:
        code = EXIT_NOT_MET
        ft = unmet[0]
        st = setups[ft]  # type: ignore[index]
        why = "; ".join(st["differences"][:4]) or "no shared setup"
        also = f", nor under {unmet[1]}" if len(unmet) > 1 else ""
        meets = f"only {st['label']}" if st["satisfied"] else "no setup"
        either = f", so not {required} either" if st["missing"] != required else ""
        text = (f"no verdict: A vs B under {ft} does not meet {st['missing']} "
                f"({DESCRIPTION[st['missing']]}){either}{also}; they meet {meets}: {why}")
    else:
        code = EXIT_OK
        for ft in FTS:
            winners[ft] = "A" if diffs[ft] > 0 else "B" if diffs[ft] < 0 else None
        best = max(table, key=lambda r: r["test_acc"])
        highest = {"method": best["method"], "ft": best["ft"], "test_acc": best["test_acc"]}
        if winners["FT_A"] is not None and winners["FT_A"] == winners["FT_B"]:
            text = f"consistent winner: {winners['FT_A']} (wins under FT_A and under FT_B)"
            consistent = True
        else:
            text = (f"inconsistent: the higher result weighs more "
                    f"({best['method']}+{best['ft']}: {best['test_acc']:.2f})")
    note = ("final-epoch test accuracy; A/B differ only in prune, FT_A/FT_B only in "
            "retrain; everything else is the base recipe")
    note += (f"; A vs B must meet {required} under each recipe" if setups is not None
             else "; setups not checked (no fingerprints given)")
    return {"consistent": consistent, "winner": winners["FT_A"] if consistent else None,
            "winners": winners, "verdict": text, "valid": code == EXIT_OK, "exit_code": code,
            "highest": highest, "required": required, "setups": setups,
            "not_done": not_done, "table": table, "tests": tests, "specs": specs or {},
            "note": note}
