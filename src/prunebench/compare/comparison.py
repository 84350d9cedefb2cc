"""``compare``: load runs, group them into comparable sets, check setups, rank methods.

Selection: explicit run ids (or unique prefixes), ``--where`` filters, or every finished
run of the store. Filters are ``key=value`` on the stored (effective) recipe, dotted
paths as in ``--set`` (``model.name=resnet56``, ``prune.method=l1``, ``retrain.lr=0:0.01``,
``seed=0``, ``model.kwargs.depth=3``); values are read like ``--set`` values and also
match as text; several filters must all hold. Runs a calibration made but did not choose
(tuning runs) are left out unless named by id.

Runs that differ only in their seed form one *configuration* (a method): it is ranked by
the mean of its final-epoch test accuracies (± std, 95% CI; "single seed" when n = 1).
Two configurations are compared seed by seed (the base model depends on the seed): the
setups they meet are those every matched-seed pair meets (with no common seed, their first
runs are compared). Configurations are grouped into S1-comparable sets (same dataset,
network, rate). A set is ranked only when every pair in it meets the required setup
(default S3.2) and it does not mix calibrated and uncalibrated results; otherwise the
ranking is refused with the reason, and subsets that do meet it are ranked separately.
The comparison is *valid* when every set of two or more configurations can be ranked.

Diverged runs (non-finite training loss; ``status: diverged``) are never ranked: the
selection lists them under ``diverged`` with their phase, epoch and reason.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any

from prunebench.compare.calibrate import calibrated_picks
from prunebench.compare.errors import CompareError
from prunebench.compare.fingerprint import Fingerprint, fingerprint, get_path
from prunebench.compare.setups import (
    SETUPS,
    check_setup,
    differences,
    satisfied_setups,
    setup_label,
    strictest,
)
from prunebench.compare.stats import Summary, summarize, welch
from prunebench.recipe import Recipe, parse_value
from prunebench.store import RunStore

DEFAULT_REQUIRED = "S3.2"

# -- selection --------------------------------------------------------------------------


def parse_where(filters: list[str] | None) -> list[tuple[str, Any, str]]:
    """``[(dotted_key, parsed_value, text), ...]``; bad filters raise one-line errors."""
    if not filters:
        return []  # no Recipe() to build: validating it imports the pruning registry (torch)
    defaults = Recipe().model_dump(mode="json")
    out = []
    for item in filters or []:
        key, sep, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not key:
            raise CompareError(f"bad filter {item!r}: expected KEY=VALUE, e.g. prune.method=l1")
        if key.split(".", 1)[0] == "finetune":
            key = "retrain" + key[len("finetune"):]
        node: Any = defaults
        parts = key.split(".")
        for i, part in enumerate(parts):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif i > 0 and parts[i - 1] == "kwargs":
                break
            else:
                raise CompareError(
                    f"bad filter key {key!r}: not a recipe field (e.g. model.name, prune.method, "
                    "retrain.lr, seed, data.name)"
                )
        out.append((key, parse_value(text), text))
    return out


def matches(recipe: dict[str, Any], where: list[tuple[str, Any, str]]) -> bool:
    for key, value, text in where:
        got = get_path(recipe, key)
        if got != value and str(got) != text:
            return False
    return True


def load_fingerprints(
    out: str | os.PathLike[str] = "runs",
    run_ids: list[str] | None = None,
    where: list[str] | None = None,
) -> list[Fingerprint]:
    """Fingerprints of the selected finished runs of a store."""
    return load_selection(out, run_ids, where)[0]


def _diverged_entry(row: dict[str, Any]) -> dict[str, Any]:
    from prunebench.compare.fingerprint import method_label

    rec = row["record"]
    info = getattr(rec, "diverged", None) or {}
    return {"id": row["id"], "method": method_label(row["recipe"]), "seed": row["recipe"].get(
        "seed"), "phase": info.get("phase"), "epoch": info.get("epoch"),
        "reason": rec.error or info.get("reason") or "diverged"}


def _is_diverged(row: dict[str, Any]) -> bool:
    rec = row.get("record")
    return rec is not None and rec.status == "diverged"


def load_selection(
    out: str | os.PathLike[str] = "runs",
    run_ids: list[str] | None = None,
    where: list[str] | None = None,
) -> tuple[list[Fingerprint], list[dict[str, Any]]]:
    """``(fingerprints of the selected finished runs, the selected diverged runs)``; a
    diverged run is listed (id, method, seed, phase, epoch, reason), never ranked."""
    store = RunStore(out)
    filters = parse_where(where)
    picks, members = calibrated_picks(out)
    rows = {r["id"]: r for r in store.list_runs()}
    if run_ids:
        ids = [store.resolve(i) for i in run_ids]
        if len(set(ids)) != len(ids):
            raise CompareError("a run is named twice")
        for rid in ids:
            rec = (rows.get(rid) or {}).get("record")
            if rec is not None and rec.status == "diverged":
                continue
            if rec is None or not rec.finished:
                status = rec.status if rec is not None else "unfinished"
                raise CompareError(f"run {rid!r} is not finished ({status}): nothing to compare")
        selected = [rows[i] for i in ids]
    else:
        selected = [
            r for r in rows.values()
            if r.get("record") is not None and (r["record"].finished or _is_diverged(r))
            and (r["id"] in picks or r["id"] not in members)
        ]
    selected = [r for r in selected if matches(r["recipe"], filters)]
    diverged = [_diverged_entry(r) for r in selected if _is_diverged(r)]
    fps = [fingerprint(r, calibration=picks.get(r["id"])) for r in selected
           if not _is_diverged(r)]
    return fps, diverged


def study_variants(out: str | os.PathLike[str]) -> dict[str, str]:
    """``{run id: its row label}`` from the study manifests of a store (``<out>/studies``)."""
    from prunebench.report.runinfo import study_index, variant_of

    return {rid: v for rid, cells in study_index(out).items()
            if (v := variant_of(cells)) is not None}


# -- configurations, groups -------------------------------------------------------------


@dataclass
class Config:
    """One configuration (method): runs that differ only in their seed."""

    key: str
    label: str
    runs: list[Fingerprint] = field(default_factory=list)

    @property
    def accs(self) -> list[float]:
        return [float(f.test_acc) for f in self.runs if f.test_acc is not None]

    @property
    def summary(self) -> Summary:
        return summarize(self.accs)

    @property
    def calibrated(self) -> bool:
        return self.runs[0].calibrated


def configurations(fps: list[Fingerprint],
                   variants: dict[str, str] | None = None) -> list[Config]:
    """Runs grouped by configuration (seeds collapse). ``variants`` (run id -> a study's
    row label) names a configuration whose runs all carry one row label by it; others get
    the short method label. Labels are made unique by what sets them apart (short text,
    never JSON)."""
    by: dict[str, Config] = {}
    for f in fps:
        c = by.setdefault(f.config, Config(f.config, f.label))
        if any(g.seed == f.seed for g in c.runs):
            raise CompareError(f"runs {f.run_id} and another share config and seed {f.seed}")
        c.runs.append(f)
    configs = list(by.values())
    for c in configs:
        c.runs.sort(key=lambda f: f.seed)
        names = {(variants or {}).get(f.run_id) for f in c.runs}
        if len(names) == 1 and None not in names:
            c.label = str(names.pop())
    by_label: dict[str, list[Config]] = {}
    for c in configs:
        by_label.setdefault(c.label, []).append(c)
    for same in by_label.values():
        if len(same) < 2:
            continue
        suffixes = [_distinguish(c, same) for c in same]
        for c, suffix in zip(same, suffixes, strict=True):
            if suffix:
                c.label = f"{c.label} ({suffix})"
    return configs


#: fingerprint fields that tell apart configurations with one method label, with the
#: short name a label shows them under
_LABEL_FIELDS = {"pruned_at": "P", "prune_epochs": "prune ep",
                 "prune_lr": "prune LR", "retrain_epochs": "ep", "retrain_lr": "LR",
                 "dataset": "data", "model": "model", "split": "split"}


def _short(name: str, v: Any) -> str:
    from prunebench.report.runinfo import plain, shorten

    return shorten(plain(str(v)), 24)


def _distinguish(c: Config, same: list[Config]) -> str:
    """What sets ``c`` apart from the other configurations with its label (short text:
    long values are cut, JSON is written as ``k=v``). The rate is left out (tables show it
    in its own column and configurations of different rates are never in one set): a
    label that differs from the others only in its rate gets no suffix."""
    f = c.runs[0]
    parts = []
    for k, short in _LABEL_FIELDS.items():
        vals = {_short(k, getattr(o.runs[0], k)) for o in same}
        if len(vals) > 1:
            parts.append(f"{short} {_short(k, getattr(f, k))}")
    for attr in ("method", "recipe"):
        mine = dict(getattr(f, attr))
        for k, v in mine.items():
            if k in _RATE_KEYS:
                continue
            if len({dict(getattr(o.runs[0], attr)).get(k) for o in same}) > 1:
                parts.append(f"{k.split('.', 1)[-1]}={_short(k, v)}")
    if parts:
        return ", ".join(parts)
    rates = {tuple(dict(o.runs[0].method).get(k) for k in _RATE_KEYS) for o in same}
    return "" if len(rates) == len(same) else c.key[:6]


_RATE_KEYS = ("prune.layers", "prune.target_speedup", "prune.target_param_sparsity",
              "prune.max_layer_ratio")


def config_info(c: Config) -> dict[str, Any]:
    """What a table shows of a configuration besides its label: ratio (param sparsity /
    speedup), the retraining LR schedule (standard form), seeds and the accuracy."""
    f = c.runs[0]
    if f.param_sparsity is None:
        ratio = "dense" if f.granularity == "dense" else "-"
    else:
        ratio = f"{f.param_sparsity:.1f}%" + ("" if f.speedup is None
                                              else f" / {f.speedup:.2f}x")
    accs = c.accs
    s = summarize(accs) if accs else None
    return {"ratio": ratio, "lr": f.retrain_lr, "n_seeds": len(c.runs),
            "acc": None if s is None else s.to_dict(),
            "acc_text": "-" if s is None else short_acc(s)}


def short_acc(s: Summary) -> str:
    """``"98.83 ± 0.55"``, or ``"98.83 (single seed)"``."""
    if s.n == 1 or s.std is None:
        return f"{s.mean:.2f} (single seed)"
    return f"{s.mean:.2f} ± {s.std:.2f}"


def _pairs(x: Config, y: Config) -> list[tuple[Fingerprint, Fingerprint]]:
    ys = {f.seed: f for f in y.runs}
    matched = [(f, ys[f.seed]) for f in x.runs if f.seed in ys]
    return matched or [(x.runs[0], y.runs[0])]


def config_setups(x: Config, y: Config) -> tuple[list[str], list[str]]:
    """``(satisfied setups, differences)`` of two configurations (matched seeds)."""
    pairs = _pairs(x, y)
    sat = set(SETUPS)
    diffs: list[str] = []
    for a, b in pairs:
        sat &= set(satisfied_setups(a, b))
        for d in differences(a, b):
            if d not in diffs:
                diffs.append(d)
    if len(pairs) == 1 and pairs[0][0].seed != pairs[0][1].seed:
        diffs.append(f"seeds: {_seeds(x)} vs {_seeds(y)} (no common seed)")
    return [s for s in SETUPS if s in sat], diffs


def _seeds(c: Config) -> str:
    return ",".join(str(f.seed) for f in c.runs)


def _s1_groups(configs: list[Config]) -> list[list[Config]]:
    groups: list[list[Config]] = []
    for c in configs:
        for g in groups:
            if all("S1" in config_setups(c, o)[0] for o in g):
                g.append(c)
                break
        else:
            groups.append([c])
    return groups


def _rank(configs: list[Config]) -> list[dict[str, Any]]:
    ordered = sorted(configs, key=lambda c: (-c.summary.mean, c.label))
    rows = []
    for i, c in enumerate(ordered):
        s = c.summary
        row: dict[str, Any] = {
            "rank": i + 1, "method": c.label, "config": c.key, "seeds": [f.seed for f in c.runs],
            **config_info(c),
            "runs": [f.run_id for f in c.runs], "test_acc": s.to_dict(), "text": s.text(),
            "calibrated": c.calibrated,
            "chosen_lr": c.runs[0].chosen_lr,
        }
        if i + 1 < len(ordered):
            w = welch(c.accs, ordered[i + 1].accs)
            row["vs_next"] = {**w.to_dict(), "text": w.text()}
        rows.append(row)
    return rows


def _subsets(configs: list[Config], required: str) -> list[list[Config]]:
    subsets: list[list[Config]] = []
    for c in configs:
        for g in subsets:
            if all(required in config_setups(c, o)[0] and c.calibrated == o.calibrated
                   for o in g):
                g.append(c)
                break
        else:
            subsets.append([c])
    return subsets


def compare(
    fps: list[Fingerprint],
    required: str = DEFAULT_REQUIRED,
    diverged: list[dict[str, Any]] | None = None,
    variants: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The comparison report of a set of fingerprints (JSON-able dict); ``valid`` says
    whether every comparable set could be ranked under ``required``. ``diverged`` (from
    :func:`load_selection`) is listed in the report, never ranked. ``variants`` (run id ->
    study row label, :func:`study_variants`) names configurations by their variant."""
    required = check_setup(required)
    diverged = list(diverged or [])
    if not fps and diverged:
        return {"required": required, "valid": True, "runs": 0, "methods": 0, "groups": [],
                "diverged": diverged,
                "verdict": f"nothing to rank: the {len(diverged)} selected runs diverged"}
    if not fps:
        raise CompareError("no finished runs selected: nothing to compare")
    configs = configurations(fps, variants)
    groups_out = []
    valid = True
    for group in _s1_groups(configs):
        pairs = []
        common = set(SETUPS)
        for x, y in itertools.combinations(group, 2):
            sat, diffs = config_setups(x, y)
            common &= set(sat)
            pairs.append({"a": x.label, "b": y.label, "strictest": strictest(sat),
                          "label": setup_label(sat), "satisfied": sat, "differences": diffs})
        g: dict[str, Any] = {
            "methods": [{"method": c.label, "config": c.key, "runs": [f.run_id for f in c.runs],
                         "seeds": [f.seed for f in c.runs], "calibrated": c.calibrated,
                         **config_info(c)}
                        for c in group],
            "setup": setup_label([s for s in SETUPS if s in common]) if pairs else None,
            "satisfied": [s for s in SETUPS if s in common] if pairs else [],
            "pairs": pairs, "ranking": None, "reason": None, "subsets": [],
        }
        mixed = len({c.calibrated for c in group}) > 1
        if len(group) < 2:
            g["reason"] = "only one method in this set: nothing to rank"
        elif mixed:
            valid = False
            g["reason"] = ("ranking not possible: calibrated and uncalibrated results are "
                           "never ranked together")
        elif required not in common:
            valid = False
            bad = next(p for p in pairs if required not in p["satisfied"])
            why = "; ".join(bad["differences"][:4]) or "no shared setup"
            g["reason"] = (f"ranking not possible: {required} is not met ({bad['a']} vs "
                           f"{bad['b']} meets only {bad['label']}: {why})")
        else:
            g["ranking"] = _rank(group)
        if g["ranking"] is None and len(group) >= 2:
            g["subsets"] = [
                {"methods": [c.label for c in s], "ranking": _rank(s)}
                for s in _subsets(group, required) if len(s) >= 2
            ]
        groups_out.append(g)
    return {"required": required, "valid": valid, "runs": len(fps), "methods": len(configs),
            "groups": groups_out, "diverged": diverged,
            "verdict": (f"valid: every comparable set meets {required}" if valid else
                        f"not valid: {required} is not met; see the reasons")}
