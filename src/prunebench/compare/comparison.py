"""``compare``: load runs, group them into comparable sets, check setups, rank methods.

Selection: explicit run ids (or unique prefixes), ``--where`` filters, or every finished
run of the store. Filters are ``key=value`` on the stored (effective) recipe, dotted
paths as in ``--set`` (``model.name=resnet56``, ``prune.method=l1``, ``retrain.lr=0:0.01``,
``seed=0``, ``model.kwargs.depth=3``); values are read like ``--set`` values and also
match as text (an LR field matches any spelling of its schedule); several filters must all
hold. Runs a calibration made but did not choose (tuning runs) are left out unless named by
id, and listed. Runs repeating a configuration and seed (they differ only in fields that
cannot change the weights) are listed as duplicates; one per seed is compared.

Runs that differ only in their seed form one *configuration* (a method): it is ranked by
the mean of its final-epoch test accuracies (± std, 95% CI; "single seed" when n = 1).
Two configurations are compared seed by seed (the base model depends on the seed): the
setups they meet are those every matched-seed pair meets (with no common seed, their first
runs are compared). Configurations are grouped into S1-comparable sets (same dataset,
network, rate). A set is ranked only when every pair in it meets the required setup
(default S3.2) and it does not mix calibrated and uncalibrated results; otherwise the
ranking is refused with the reason, and subsets that do meet it are ranked separately.
The comparison is *valid* when every set of two or more configurations can be ranked.

Configurations are ordered by rate before grouping (a tolerance is not transitive: the
store's order must not decide the sets). Equal means share a rank. A base checkpoint is
identified by its sha256, not its path.

Diverged runs (non-finite training loss; ``status: diverged``) are never ranked: the
selection lists them under ``diverged`` with their phase, epoch and reason; a diverged run
named by id makes the comparison not valid (the CLI exits 4).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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
        if got != value and str(got) != text and not _same_schedule(key, got, text):
            return False
    return True


def _same_schedule(key: str, got: Any, text: str) -> bool:
    """An LR field matches any spelling of its schedule (``0:1e9`` is ``0:1e+09``)."""
    if key.rsplit(".", 1)[-1] != "lr" or not isinstance(got, str):
        return False
    from prunebench.errors import PrunebenchError
    from prunebench.schedule import parse_schedule

    try:
        return parse_schedule(got).canonical() == parse_schedule(text).canonical()
    except (PrunebenchError, ValueError):
        return False


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


class Selection(NamedTuple):
    """What a selection holds: the fingerprints of its finished runs, its diverged runs
    (listed: id, method, seed, phase, epoch, reason; never ranked), and the tuning runs of
    calibrations it left out (id, method, seed; named by id they are included)."""

    fps: list[Fingerprint]
    diverged: list[dict[str, Any]]
    tuning: list[dict[str, Any]]


def load_selection(
    out: str | os.PathLike[str] = "runs",
    run_ids: list[str] | None = None,
    where: list[str] | None = None,
) -> Selection:
    """The selected runs of a store (see :class:`Selection`). Every run the selection
    matched but leaves out is listed, never dropped silently."""
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
        tuning: list[dict[str, Any]] = []
    else:
        finished = [r for r in rows.values() if r.get("record") is not None
                    and (r["record"].finished or _is_diverged(r))
                    and matches(r["recipe"], filters)]
        # a calibration's unchosen LRs are tuning runs, not results: left out, and listed
        # (a run of the same recipe started on its own *is* that run: content-keyed ids)
        selected = [r for r in finished if r["id"] in picks or r["id"] not in members]
        tuning = [_tuning_entry(r) for r in finished
                  if r["id"] not in picks and r["id"] in members]
    selected = [r for r in selected if matches(r["recipe"], filters)]
    diverged = [_diverged_entry(r) for r in selected if _is_diverged(r)]
    fps = [fingerprint(r, calibration=picks.get(r["id"])) for r in selected
           if not _is_diverged(r)]
    return Selection(fps, diverged, tuning)


def _tuning_entry(row: dict[str, Any]) -> dict[str, Any]:
    from prunebench.compare.fingerprint import method_label

    rec = row["recipe"]
    return {"id": row["id"], "method": method_label(rec), "seed": rec.get("seed"),
            "lr": str((rec.get("retrain") or {}).get("lr"))}


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
    #: runs of this configuration and a seed it already has: they differ from that run only
    #: in fields that cannot change the weights (FIELD_ROLES "ignore": measurements,
    #: evaluation batching, trackers), so one run per seed stands for them
    duplicates: list[tuple[Fingerprint, Fingerprint]] = field(default_factory=list)

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
    for f in sorted(fps, key=lambda f: f.run_id):  # which duplicate stands: not the order
        c = by.setdefault(f.config, Config(f.config, f.label))
        same = next((g for g in c.runs if g.seed == f.seed), None)
        if same is not None:
            c.duplicates.append((f, same))
            continue
        c.runs.append(f)
    configs = sorted(by.values(), key=lambda c: c.key)
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
    # labels name configurations in tables and rankings: never two with one label (a cut
    # value can hide the difference), so a clash gets the configuration key
    counts: dict[str, int] = {}
    for c in configs:
        counts[c.label] = counts.get(c.label, 0) + 1
    for c in configs:
        if counts[c.label] > 1:
            c.label = f"{c.label} [{c.key[:8]}]"
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


def _by_rate(configs: list[Config]) -> list[Config]:
    """Configurations in a fixed order (rate, then key): grouping by a tolerance is not
    transitive, so the order decides the groups and must not be the store's."""
    def rate(c: Config) -> tuple[float, float, str]:
        f = c.runs[0]
        return (f.param_sparsity if f.param_sparsity is not None else -1.0,
                f.speedup if f.speedup is not None else -1.0, c.key)

    return sorted(configs, key=rate)


def _s1_groups(configs: list[Config]) -> list[list[Config]]:
    """S1-comparable sets: every two configurations of a set meet S1."""
    groups: list[list[Config]] = []
    for c in _by_rate(configs):
        for g in groups:
            if all("S1" in config_setups(c, o)[0] for o in g):
                g.append(c)
                break
        else:
            groups.append([c])
    return groups


def _rank(configs: list[Config]) -> list[dict[str, Any]]:
    """Rows by mean accuracy; equal means share a rank (competition ranking: 1, 1, 3)."""
    ordered = sorted(configs, key=lambda c: (-c.summary.mean, c.label))
    rows = []
    rank = 0
    for i, c in enumerate(ordered):
        s = c.summary
        if i == 0 or not _tied(s.mean, ordered[i - 1].summary.mean):
            rank = i + 1
        row: dict[str, Any] = {
            "rank": rank, "method": c.label, "config": c.key, "seeds": [f.seed for f in c.runs],
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


def _tied(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def best_of(ranking: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows sharing rank 1 (several when tied)."""
    return [r for r in ranking if r["rank"] == 1]


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
    tuning: list[dict[str, Any]] | None = None,
    named: bool = False,
) -> dict[str, Any]:
    """The comparison report of a set of fingerprints (JSON-able dict); ``valid`` says
    whether every comparable set could be ranked under ``required``. ``diverged`` (from
    :func:`load_selection`) is listed in the report, never ranked. ``variants`` (run id ->
    study row label, :func:`study_variants`) names configurations by their variant.
    ``tuning``: the calibrations' tuning runs the selection left out (listed in the report).
    ``named``: the runs were named one by one, so a diverged one makes the comparison not
    valid (it cannot be compared); in a selection by filter it is listed only.
    Runs that repeat a configuration and seed (they differ only in fields that cannot
    change the weights) are listed under ``duplicates``; one run per seed is compared."""
    required = check_setup(required)
    diverged = list(diverged or [])
    left_out = {"diverged": diverged, "tuning": list(tuning or [])}
    named_diverged = (f"not valid: {len(diverged)} of the named runs diverged and cannot be "
                      "compared: " + ", ".join(d["id"] for d in diverged)
                      if named and diverged else None)
    if not fps and diverged:
        return {"required": required, "valid": named_diverged is None, "runs": 0,
                "methods": 0, "groups": [], **left_out, "duplicates": [],
                "verdict": named_diverged
                or f"nothing to rank: the {len(diverged)} selected runs diverged"}
    if not fps:
        raise CompareError("no finished runs selected: nothing to compare")
    configs = configurations(fps, variants)
    duplicates = [{"id": f.run_id, "same_as": g.run_id, "method": c.label, "seed": f.seed,
                   "test_acc": f.test_acc, "same_as_test_acc": g.test_acc}
                  for c in configs for f, g in c.duplicates]
    fps = [f for c in configs for f in c.runs]
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
    valid = valid and named_diverged is None
    return {"required": required, "valid": valid, "runs": len(fps), "methods": len(configs),
            "groups": groups_out, **left_out, "duplicates": duplicates,
            "verdict": named_diverged or (
                f"valid: every comparable set meets {required}" if valid else
                f"not valid: {required} is not met; see the reasons")}
