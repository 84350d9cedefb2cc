"""Regenerate docs/findings.md and the README's demo numbers from one run of the CPU presets.

    .venv/bin/python scripts/findings.py --out runs/findings --seeds 2
    .venv/bin/python scripts/findings.py --out runs/findings --seeds 2,trainability=1,crossval=1
    .venv/bin/python scripts/findings.py --out runs/findings --reuse     # no training: rewrite

Runs the built-in studies' ``cpu`` presets into one store (finished cells are reused),
reads the results back through the report data layer, and writes every number of
docs/findings.md and of the README block ``<!-- findings:demo -->`` from them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STUDIES = ["lr-effect", "scratch-vs-inherit", "lr-catch-up", "crossval", "trainability"]
TIMINGS = "findings-timings.json"
COMMAND = "findings-command.txt"  # the command that trained the store


# -- running ------------------------------------------------------------------------------
def parse_seeds(spec: str, studies: list[str]) -> dict[str, int]:
    """``"2"`` -> 2 seeds each; ``"2,trainability=1"`` -> 2 except trainability."""
    default, per = None, {}
    for part in (p.strip() for p in str(spec).split(",") if p.strip()):
        if "=" in part:
            name, n = part.split("=", 1)
            if name.strip() not in STUDIES:
                raise SystemExit(f"error: --seeds names unknown study {name.strip()!r}")
            per[name.strip()] = int(n)
        else:
            default = int(part)
    if default is None and len(per) < len(studies):
        default = 1
    out = {s: per.get(s, default) for s in studies}
    if any(n is None or n < 1 for n in out.values()):
        raise SystemExit(f"error: bad --seeds {spec!r}")
    return out  # type: ignore[return-value]


def _finished_cells(study: str, out: Path, seeds: int) -> tuple[int, int]:
    from prunebench.plan import plan
    from prunebench.studies import expand_study, load_study

    cells = expand_study(load_study(study), "cpu", seeds=seeds)
    done = sum((out / plan(c.recipe)[-1].key / "result.json").is_file() for c in cells)
    return done, len(cells)


def run_all(out: Path, seeds: dict[str, int], workers: int = 1) -> dict[str, Any]:
    """Run each study's cpu preset; per-study wall times kept in ``<out>/findings-timings.json``
    (a study whose cells were all finished before keeps its earlier timing)."""
    from prunebench import io
    from prunebench.studies import run_study

    path = out / TIMINGS
    timings = json.loads(path.read_text()) if path.is_file() else {}
    for study, n in seeds.items():
        done, total = _finished_cells(study, out, n)
        print(f"[findings] {study}: {total} cells x seeds={n}, {done} already finished",
              flush=True)
        t0 = time.perf_counter()
        run_study(study, out, preset="cpu", seeds=n, workers=workers,
                  backend="process" if workers > 1 else "serial",
                  command=f"prunebench study {study} --preset cpu --seeds {n} --out {out}")
        seconds = time.perf_counter() - t0
        print(f"[findings] {study}: {seconds:.0f} s", flush=True)
        if done < total or study not in timings or timings[study].get("seeds") != n:
            timings[study] = {"seconds": round(seconds, 1), "seeds": n, "cells": total,
                              "reused": done, "workers": workers,
                              "date": time.strftime("%Y-%m-%d")}
        io.write_json(path, timings)
    return timings


# -- numbers ------------------------------------------------------------------------------
CHANCE = 10.0  # every CPU preset has 10 classes


def cell(study: Any, row: str, column: str, get: Any = "test_acc") -> dict[int, float]:
    """Per seed, one number of one table cell (``get``: a RunData attribute or a function)."""
    out = {}
    for c in study.cells:
        if c.row == row and c.column == column and c.run is not None:
            v = get(c.run) if callable(get) else getattr(c.run, get)
            if isinstance(v, int | float):
                out[int(c.seed)] = float(v)
    return out


def jsv(key: str) -> Any:
    """A getter for the run's mean JSV: ``dense``, ``pruned`` (right after pruning), ``final``."""
    def get(run: Any) -> float | None:
        rec = getattr(run.record, "jsv", None) or {}
        v = rec.get(key)
        if isinstance(v, dict):
            v = v.get("mean")
        return v if isinstance(v, int | float) else None
    return get


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    return m, (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def num(v: float, digits: int = 2) -> str:
    """Fixed decimals; ``digits < 0``: 3 significant digits (JSV spans 1e-4 .. 2)."""
    if digits < 0:
        return f"{v:.3g}"
    return f"{v:.{digits}f}"


def fmt(values: dict[int, float] | list[float], digits: int = 2) -> str:
    """``87.45 ± 0.31`` over seeds; a single value alone; ``-`` for none."""
    vs = list(values.values()) if isinstance(values, dict) else list(values)
    if not vs:
        return "-"
    m, sd = mean_sd(vs)
    return num(m, digits) if sd is None else f"{num(m, digits)} ± {num(sd, digits)}"


def mean(values: dict[int, float]) -> float | None:
    return mean_sd(list(values.values()))[0] if values else None


def seeds_text(n: int) -> str:
    return "single seed: noisy" if n == 1 else f"{n} seeds"


def compare(a: dict[int, float], b: dict[int, float], digits: int = 2) -> dict[str, Any]:
    """Does ``a`` exceed ``b``? Paired by seed: ``yes`` / ``no`` when every seed agrees,
    ``mixed`` when the seeds disagree in sign, ``n/a`` without a common seed."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    n = len(seeds)
    if n == 0:
        word = "n/a"
    elif all(d > 0 for d in diffs):
        word = "yes"
    elif all(d < 0 for d in diffs):
        word = "no"
    else:
        word = "mixed"
    nums = (f"{fmt({s: a[s] for s in seeds}, digits)} vs {fmt({s: b[s] for s in seeds}, digits)}"
            if n else "no data")
    return {"word": word, "n": n, "diffs": diffs, "nums": nums,
            "text": f"{word}, {nums}, {seeds_text(n)}" if n else "n/a (no data)"}


def combine(parts: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """One verdict over several comparisons: the common word, else ``partly``."""
    words = [c["word"] for _, c in parts if c["word"] != "n/a"]  # missing cells: listed only
    ns = [c["n"] for _, c in parts if c["n"]]
    n = min(ns) if ns else 0
    if not words:
        word = "n/a"
    elif len(set(words)) == 1:
        word = words[0]
    elif set(words) == {"yes", "mixed"}:
        word = "mostly yes (mixed seeds)"
    elif set(words) == {"no", "mixed"}:
        word = "mostly no (mixed seeds)"
    else:
        word = "partly"
    detail = "; ".join(f"{label} {c['word']} ({c['nums']})" if c["word"] != word
                       else f"{label} {c['nums']}" for label, c in parts)
    tail = f", {seeds_text(n)}" if n else ""
    return {"word": word, "n": n, "text": f"{word}: {detail}{tail}"}


def find_row(study: Any, *needles: str) -> str | None:
    """The first row whose label contains every needle (labels come from the preset YAML)."""
    for r in study.rows:
        if all(x in r for x in needles):
            return r
    return None


# -- the claims ---------------------------------------------------------------------------
def lr_effect_claims(st: Any) -> dict[str, Any]:
    final, ta, scratch = [], [], []
    for sched in ("step", "cosine"):
        hi, lo = find_row(st, sched, "LR 0.01"), find_row(st, sched, "LR 0.001")
        sc = find_row(st, "Scratch", sched)
        for col in st.columns:
            if hi and lo:
                final.append((f"{col} {sched}", compare(cell(st, hi, col), cell(st, lo, col))))
                ta.append((f"{col} {sched}", compare(cell(st, hi, col, "ta"),
                                                     cell(st, lo, col, "ta"))))
            if sc and hi:
                scratch.append((f"{col} {sched}",
                                compare(cell(st, sc, col), cell(st, hi, col))))
    return {"final": combine(final), "ta": combine(ta), "scratch": combine(scratch),
            "final_parts": final, "ta_parts": ta}


def catch_up_claims(st: Any) -> dict[str, Any]:
    hi, lo = st.rows[0], st.rows[1]
    more = st.rows[2:]
    col = st.columns[0]
    a_hi, a_lo = cell(st, hi, col), cell(st, lo, col)
    longest = cell(st, more[-1], col) if more else {}
    gap0 = {s: a_hi[s] - a_lo[s] for s in set(a_hi) & set(a_lo)}
    gap1 = {s: a_hi[s] - longest[s] for s in set(a_hi) & set(longest)}
    shrink = compare(gap0, gap1)  # the gap at +0 exceeds the gap with the most epochs
    series = " / ".join(num(mean(cell(st, r, col)) or 0) for r in more)
    extra = " / ".join(r.split("+")[-1].split(" ")[0] for r in more)
    text = (f"{shrink['word']}: {lo} {num(mean(a_lo) or 0)} -> {series} % with "
            f"+{extra.replace(' / ', '/+')} first-stage epochs, vs {num(mean(a_hi) or 0)} % at "
            f"{hi} (gap {num(mean(gap0) or 0)} -> {num(mean(gap1) or 0)} points), "
            f"{seeds_text(shrink['n'])}")
    caught = compare(longest, a_hi)
    return {"shrink": {**shrink, "text": text}, "caught": caught, "gap0": gap0, "gap1": gap1}


def trainability_claims(st: Any) -> dict[str, Any]:
    inh = [r for r in st.rows if "inherit" in r]
    orth = [r for r in st.rows if "OrthP" in r]
    collapse, restore, gap = [], [], []
    for col in st.columns:
        dense = cell(st, inh[0], col, jsv("dense"))
        pruned = cell(st, inh[0], col, jsv("pruned"))
        c = compare(dense, pruned, -1)
        ratio = (mean(dense) or 0) / (mean(pruned) or float("nan"))
        collapse.append((col, {**c, "nums": f"{c['nums']}, {num(ratio, 0)}x lower"}))
        o = cell(st, orth[0], col, jsv("pruned"))
        near = {s: 0.1 - abs(v - 1.0) for s, v in o.items()}  # > 0: within 0.1 of 1
        r = compare(near, {s: 0.0 for s in near})
        restore.append((col, {**r, "nums": f"JSV after OrthP {fmt(o, -1)}"}))
        g_inh = {s: v - cell(st, inh[1], col).get(s, float("nan"))
                 for s, v in cell(st, inh[0], col).items()}
        g_orth = {s: abs(v - cell(st, orth[1], col).get(s, float("nan")))
                  for s, v in cell(st, orth[0], col).items()}
        g = compare(g_inh, g_orth)
        gap.append((col, {**g, "nums": f"gap {fmt(g_inh)} -> {fmt(g_orth)} points"}))
    return {"collapse": combine(collapse), "restore": combine(restore), "gap": combine(gap)}


def _pxfy(label: str) -> str | None:
    import re
    m = re.match(r"(P\d+F\d+)", label)
    return m.group(1) if m else None


def scratch_claims(st: Any) -> dict[str, Any]:
    scratch = find_row(st, "Scratch")
    s42 = [r for r in st.rows if "S4.2" in r]
    sxa = [r for r in st.rows if "SX-A" in r]
    cols = st.columns
    wins, detail, out = {}, [], {}
    for col in cols:
        cs = [compare(cell(st, r, col), cell(st, scratch, col)) for r in s42]
        wins[col] = sum(c["word"] == "yes" for c in cs)
        mixed = sum(c["word"] == "mixed" for c in cs)
        detail.append(f"{col}: {wins[col]}/{len(s42)}" + (f" (+{mixed} mixed)" if mixed else ""))
    n = min((len(cell(st, scratch, c)) for c in cols), default=0)
    mid = cols[1:-1]
    held = bool(mid) and all(wins[m] > max(wins[cols[0]], wins[cols[-1]]) for m in mid)
    out["s42"] = {"word": "yes" if held else "no", "n": n,
                  "text": f"{'yes' if held else 'no'}: S4.2 rows beating Scratch on every seed, "
                          + ", ".join(detail) + f", {seeds_text(n)}"}
    out["s42_parts"] = {col: [(r, compare(cell(st, r, col), cell(st, scratch, col)))
                              for r in s42] for col in cols}
    out["sxa"] = combine([(f"{_pxfy(r)} {col}", compare(cell(st, r, col), cell(st, scratch, col)))
                          for r in sxa for col in cols])
    pairs = []
    for r in sxa:
        same = next((x for x in s42 if _pxfy(x) == _pxfy(r)), None)
        if same:
            pairs += [(f"{_pxfy(r)} {col}", compare(cell(st, r, col), cell(st, same, col)))
                      for col in cols]
    out["larger_lr"] = combine(pairs)
    # late pruning with a tiny LR: the S4.2 row pruned latest, at the highest ratio
    late = max(s42, key=lambda r: int((_pxfy(r) or "P0F").split("F")[0][1:]), default=None)
    pruning = [r for r in st.rows if r != scratch]
    if late:
        hi = cols[-1]
        others = [r for r in pruning if r != late]
        cs = [compare(cell(st, r, hi), cell(st, late, hi)) for r in others]
        word = ("yes" if all(c["word"] == "yes" for c in cs) else
                "no" if all(c["word"] == "no" for c in cs) else "partly")
        series = " -> ".join(f"{num(mean(cell(st, late, c)) or 0)}" for c in cols)
        nxt = min(others, key=lambda r: mean(cell(st, r, hi)) or 0)
        n = len(cell(st, late, hi))
        out["late"] = {"word": word, "n": n, "row": late,
                       "text": f"{word}: {late} gives {series} % over "
                               f"{' / '.join(cols)}; at {hi} the worst pruning row "
                               f"{'on every seed' if word == 'yes' else '?'} (next lowest: "
                               f"{nxt} {num(mean(cell(st, nxt, hi)) or 0)} %), {seeds_text(n)}"}
        if word != "yes":
            out["late"]["text"] = (f"{word}: {late} gives {series} % over {' / '.join(cols)}; "
                                   f"at {hi} it is not below every other pruning row on every "
                                   f"seed (lowest other: {nxt} "
                                   f"{num(mean(cell(st, nxt, hi)) or 0)} %), {seeds_text(n)}")
    out["chance"] = [col for col in cols
                     if (mean(cell(st, scratch, col)) or 100) < CHANCE + 5]
    if out["chance"]:
        out["s42"]["text"] += (f" (Scratch stayed near chance at {', '.join(out['chance'])}: "
                               "no baseline there)")
    dense = {}
    for c in st.cells:
        if c.run is not None and c.run.dense_acc is not None:
            dense[int(c.seed)] = float(c.run.dense_acc)
    out["dense"] = dense
    out["above_dense"] = {col: [r for r in pruning if compare(cell(st, r, col), dense)["word"]
                                == "yes"] for col in cols}
    return out


def crossval_claims(st: Any) -> dict[str, Any]:
    a, b = st.rows[0], st.rows[1]
    parts = [(col.split(":")[0], compare(cell(st, a, col), cell(st, b, col)))
             for col in st.columns]
    analysis = st.manifest.get("analysis") or {}
    return {"ab": combine(parts), "verdict": analysis.get("verdict", "(no verdict stored)"),
            "tests": analysis.get("tests") or {}}


# -- tables -------------------------------------------------------------------------------
def md_table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---" if a == "l" else "---:" for a in align]
    lines = [header, sep, *rows]
    return "\n".join("| " + " | ".join(r) + " |" for r in lines)


def rate_row(st: Any, rows: list[str] | None = None) -> list[str]:
    """``param sparsity / speedup`` per column, from the first pruned run of each column."""
    out = ["param sparsity / speedup"]
    for col in st.columns:
        text = "-"
        for r in rows or st.rows:
            for run in st.runs(r, col):
                if run.param_sparsity is not None and run.speedup is not None:
                    text = f"{run.param_sparsity:.2f} % / {run.speedup:.2f}x"
                    break
            if text != "-":
                break
        out.append(text)
    return out


def grid_table(st: Any, get: Any = "test_acc", rates: bool = True, digits: int = 2) -> str:
    rows = [[r, *(fmt(cell(st, r, c, get), digits) for c in st.columns)] for r in st.rows]
    if rates:
        rows.append(rate_row(st, [r for r in st.rows if "Scratch" not in r]))
    return md_table(["variant", *st.columns], rows)


def caption(st: Any, what: str = "final-epoch test accuracy (%)") -> str:
    n = len(st.seeds)
    tail = (f"mean ± std over {n} seeds ({', '.join(map(str, st.seeds))})" if n > 1 else
            f"single seed ({st.seeds[0] if st.seeds else '?'}): noisy, no spread shown")
    return f"*{what}; {tail}.*"


def dense_text(st: Any) -> str:
    per_seed: dict[int, float] = {}
    for c in st.cells:
        if c.run is not None and c.run.dense_acc is not None:
            per_seed[int(c.seed)] = float(c.run.dense_acc)
    return fmt(per_seed)


def epochs_of(st: Any, row: str, attr: str = "retrain") -> str:
    eps = {getattr(getattr(r.record, "retrain", None), "epochs", None) for r in st.runs(row)}
    eps.discard(None)
    return "/".join(str(e) for e in sorted(eps)) or "?"


def protocol(st: Any) -> str:
    """What the study does, read from its preset YAML (via the manifest) at generation time."""
    desc = " ".join(str(st.description or "").split())
    note = " ".join(str(st.note or "").split())
    out = [f"**Protocol** (`{st.name}` study, `cpu` preset; text from "
           f"`src/prunebench/studies/{st.name.replace('-', '_')}.yaml`): {desc}"]
    if note:
        out.append(f"**CPU preset:** {note}")
    return "\n\n".join(out)


def section_head(st: Any, title: str) -> list[str]:
    return [f"## {title}", "", "```bash", st.command, "```", "", protocol(st), ""]


# -- the document -------------------------------------------------------------------------
def figure(figs: dict[str, str], name: str, alt: str) -> list[str]:
    return [f"![{alt}](figures/{name})", ""] if name in figs else []


def lr_effect_section(st: Any, figs: dict[str, str]) -> list[str]:
    c = lr_effect_claims(st)
    sc_rows = [r for r in st.rows if "Scratch" in r]
    out = section_head(st, "Mystery 1: the retraining LR (lr-effect)")
    out += [f"Dense LeNet-5: {dense_text(st)} %. Scratch rows train the pruned architecture "
            f"{epochs_of(st, sc_rows[0]) if sc_rows else '?'} epochs; L1 rows retrain "
            f"{epochs_of(st, next(r for r in st.rows if 'Scratch' not in r))} epochs.", "",
            grid_table(st), "", caption(st), "",
            "Trainability accuracy (TA: mean test accuracy over the first LR stage, "
            "the first quarter for cosine):", "",
            grid_table(st, "ta", rates=False), "", caption(st, "TA (%)"), "",
            f"- Larger initial LR wins after the short retraining: {c['final']['text']}.",
            f"- TA, LR 0.01 above LR 0.001 within one schedule: {c['ta']['text']}.",
            f"- Scratch-E above L1 + retraining at LR 0.01 (same schedule): "
            f"{c['scratch']['text']}.", ""]
    out += figure(figs, "lr-effect-accuracy.png", "lr-effect: test accuracy vs retraining epoch")
    return out


def catch_up_section(st: Any, figs: dict[str, str]) -> list[str]:
    c = catch_up_claims(st)
    out = section_head(st, "Small LRs catch up given epochs (lr-catch-up)")
    col = st.columns[0]
    rows = [[r, epochs_of(st, r), fmt(cell(st, r, col)), fmt(cell(st, r, col, "ta"))]
            for r in st.rows]
    out += [md_table([f"variant ({col})", "retrain epochs", "final acc", "TA"], rows), "",
            caption(st, "final-epoch test accuracy and TA (%), TA over each run's own first "
                        "LR stage"), "",
            f"- The gap to LR 0.01 shrinks with more first-stage epochs: {c['shrink']['text']}.",
            f"- The longest small-LR run reaches LR 0.01: {c['caught']['text']}.", ""]
    out += figure(figs, "lr-catch-up-accuracy.png",
                  "lr-catch-up: test accuracy vs retraining epoch")
    return out


def trainability_section(st: Any, figs: dict[str, str]) -> list[str]:
    c = trainability_claims(st)
    out = section_head(st, "Trainability: pruning collapses the Jacobian, OrthP restores it")
    dense = {}
    for cc in st.cells:
        v = jsv("dense")(cc.run) if cc.run is not None else None
        if v is not None:
            dense[int(cc.seed)] = v
    rows = []
    for col in st.columns:
        for r in st.rows:
            rows.append([r, col, fmt(cell(st, r, col)), fmt(cell(st, r, col, "ta")),
                         fmt(cell(st, r, col, jsv("pruned")), -1),
                         fmt(cell(st, r, col, jsv("final")), -1)])
    out += [f"Dense MLP-7-Linear: {dense_text(st)} %, mean JSV {fmt(dense, -1)} "
            "(eval mode, 32 fixed training images).", "",
            md_table(["variant", "PR", "final acc", "TA", "JSV after pruning",
                      "JSV at the end"], rows, "llrrrr"), "",
            caption(st, "accuracies (%) and mean JSV"), "",
            f"- Pruning drops mean JSV below the dense model's: {c['collapse']['text']}.",
            f"- OrthP restores it to about 1 (within 0.1): {c['restore']['text']}.",
            f"- The LR 0.01 vs 0.001 gap shrinks with OrthP: {c['gap']['text']}.", ""]
    out += figure(figs, "trainability-jsv.png", "trainability: mean JSV vs retraining epoch")
    out += figure(figs, "trainability-accuracy.png",
                  "trainability: test accuracy vs retraining epoch")
    return out


def scratch_section(st: Any, figs: dict[str, str]) -> list[str]:
    c = scratch_claims(st)
    out = section_head(st, "Mystery 2: scratch vs inheriting (scratch-vs-inherit)")
    out += [f"Full-length dense run: {fmt(c['dense'])} %.", "",
            grid_table(st), "", caption(st), "",
            f"- Under S4.2 pruning beats Scratch clearly only at mid ratios: {c['s42']['text']}."]
    for col, parts in c["s42_parts"].items():
        out.append(f"  - {col}: " + "; ".join(f"{r} {p['word']} ({p['nums']})"
                                              for r, p in parts))
    out += [f"- Under SX-A (larger LR) pruning beats Scratch: {c['sxa']['text']}.",
            f"- The larger LR is what wins: each SX-A row above the S4.2 row pruned at the same "
            f"epoch: {c['larger_lr']['text']}."]
    if "late" in c:
        out.append(f"- Late pruning with a tiny LR collapses at the highest ratio: "
                   f"{c['late']['text']}.")
    above = "; ".join(f"{col}: {', '.join(rs) if rs else 'none'}"
                      for col, rs in c["above_dense"].items())
    out.append(f"- Rows above the full-length dense run on every seed: {above}.")
    for col in c["chance"]:
        out.append(f"- At {col} Scratch stayed near chance ({fmt(cell(st, 'Scratch', col))} %, "
                   f"10 classes): not a meaningful baseline there.")
    out.append("")
    out += figure(figs, "scratch-vs-inherit-ratio.png",
                  "scratch-vs-inherit: accuracy vs ratio, pruning (solid) vs scratch (dashed)")
    return out


def crossval_section(st: Any, figs: dict[str, str]) -> list[str]:
    c = crossval_claims(st)
    out = section_head(st, "Recipe cross-validation (crossval)")
    out += [grid_table(st), "", caption(st), "",
            f"- Verdict printed by the study: \"{c['verdict']}\".",
            f"- A above B under each recipe: {c['ab']['text']}."]
    for ft, t in c["tests"].items():
        if isinstance(t, dict) and t.get("text"):
            out.append(f"- Welch test A vs B under {ft}: {t['text']}.")
    out.append("")
    out += figure(figs, "crossval-accuracy.png", "crossval: test accuracy vs retraining epoch")
    return out


SECTIONS = {"lr-effect": lr_effect_section, "lr-catch-up": catch_up_section,
            "trainability": trainability_section, "scratch-vs-inherit": scratch_section,
            "crossval": crossval_section}


def summary_rows(studies: dict[str, Any]) -> list[list[str]]:
    """``paper finding | held at CPU scale?`` with every verdict computed."""
    rows = []
    if "lr-effect" in studies:
        c = lr_effect_claims(studies["lr-effect"])
        rows += [["Mystery 1: after the standard retraining a larger initial LR (0.01 vs "
                  "0.001) gives higher accuracy, step and cosine, both ratios", c["final"]["text"]],
                 ["...because pruning damaged trainability: TA of LR 0.01 above LR 0.001 "
                  "within one schedule", c["ta"]["text"]]]
    if "lr-catch-up" in studies:
        c = catch_up_claims(studies["lr-catch-up"])
        rows.append(["...and the small LR simply has not converged: given more first-stage "
                     "epochs it approaches LR 0.01 (Table 5)", c["shrink"]["text"]])
    if "trainability" in studies:
        c = trainability_claims(studies["trainability"])
        rows += [["Pruning damages trainability: mean JSV collapses (MLP-7-Linear)",
                  c["collapse"]["text"]],
                 ["OrthP restores mean JSV to about 1", c["restore"]["text"]],
                 ["...and the LR 0.01 vs 0.001 gap shrinks with OrthP", c["gap"]["text"]]]
    if "scratch-vs-inherit" in studies:
        c = scratch_claims(studies["scratch-vs-inherit"])
        rows += [["Mystery 2: under S4.2 pruning beats scratch clearly only at mid ratios",
                  c["s42"]["text"]],
                 ["...under SX-A (a larger LR) pruning beats scratch", c["sxa"]["text"]],
                 ["...because of the larger LR (SX-A row vs the S4.2 row pruned at the same "
                  "epoch)", c["larger_lr"]["text"]]]
        if "late" in c:
            rows.append(["...late pruning with a tiny LR collapses at high ratios",
                         c["late"]["text"]])
    if "crossval" in studies:
        c = crossval_claims(studies["crossval"])
        rows.append(["Recipe cross-validation: a method that wins under both recipes is the "
                     "better one", f"{c['verdict']}; A above B: {c['ab']['text']}"])
    return [[a, b.replace("|", "\\|")] for a, b in rows]


# -- writing ------------------------------------------------------------------------------
DEMO_BEGIN, DEMO_END = "<!-- findings:demo -->", "<!-- /findings:demo -->"


def demo_block(st: Any, seed: int = 0) -> str:
    """The README's demo paragraph from seed ``seed`` of the lr-effect study (= make demo)."""
    parts = []
    for sched in ("step", "cosine"):
        hi, lo = find_row(st, sched, "LR 0.01"), find_row(st, sched, "LR 0.001")
        for col in st.columns:
            a, b = cell(st, hi, col).get(seed), cell(st, lo, col).get(seed)
            if a is not None and b is not None:
                parts.append((sched, col, a, b))
    wins = [p for p in parts if p[2] > p[3]]
    if parts and len(wins) == len(parts) == 2 * len(st.columns):
        head = "the larger initial LR wins at every ratio and under both schedules"
    elif parts and len(wins) == len(parts):
        head = "the larger initial LR wins wherever both LRs have a result"
    elif not wins:
        head = "the larger initial LR does not win at any ratio or schedule"
    else:
        head = ("the larger initial LR wins at " + ", ".join(f"{c} ({s})" for s, c, _, _ in wins)
                + " but not elsewhere")
    nums = "; ".join(f"{s}: " + ", ".join(f"{a:.2f} vs {b:.2f} % at {c}"
                                          for s2, c, a, b in parts if s2 == s)
                     for s in ("step", "cosine") if any(p[0] == s for p in parts))
    dense = next((c.run.dense_acc for c in st.cells if c.seed == seed and c.run is not None
                  and c.run.dense_acc is not None), None)
    dense_txt = f"dense model {dense:.2f} %; " if dense is not None else ""
    return (f"{DEMO_BEGIN}\nWhat it measured (seed {seed}, the one seed `make demo` runs: "
            f"`prunebench study lr-effect --preset cpu --out runs/demo` with 2 torch threads "
            f"and AVX2 kernels pinned, as `make demo` does; regenerated by `make findings`, "
            f"more seeds in [docs/findings.md](docs/findings.md)): after the short "
            f"retraining {head} ({dense_txt}LR 0.01 vs 0.001, {nums}), the paper's Mystery 1 "
            f"in miniature.\n{DEMO_END}")


def replace_block(text: str, block: str) -> str:
    """Replace the ``findings:demo`` block in place; an error when the markers are missing."""
    i, j = text.find(DEMO_BEGIN), text.find(DEMO_END)
    if i < 0 or j < i:
        raise ValueError(f"README has no {DEMO_BEGIN} ... {DEMO_END} block")
    return text[:i] + block + text[j + len(DEMO_END):]


def machine() -> str:
    import platform

    import torch

    import prunebench

    ver = getattr(prunebench, "__version__", "?")
    return (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"prunebench {ver}, Python {platform.python_version()}")


def copy_figures(out: Path, studies: dict[str, Any], dest: Path) -> dict[str, str]:
    """Figures through the report API (``write_report(..., "html")``), copied to ``dest``
    with stable names ``<study>-<kind>.png``."""
    import shutil

    from prunebench.report import write_report

    wanted = {"lr-effect": ["accuracy"], "lr-catch-up": ["accuracy"],
              "trainability": ["jsv", "accuracy"], "scratch-vs-inherit": ["ratio"],
              "crossval": ["accuracy"]}
    write_report(out, "html", out / "report.html")
    dest.mkdir(parents=True, exist_ok=True)
    figs = {}
    for name, st in studies.items():
        for kind in wanted.get(name, []):
            cands = [out / "figures" / st.key / f"{kind}.png",
                     *sorted((out / "figures").glob(f"{name}*/{kind}.png"))]
            src = next((c for c in cands if c.is_file()), None)
            if src is None:
                print(f"[findings] warning: no {kind} figure for {name}", file=sys.stderr)
                continue
            shutil.copyfile(src, dest / f"{name}-{kind}.png")
            figs[f"{name}-{kind}.png"] = str(src)
    return figs


def write_findings(studies: dict[str, Any], timings: dict[str, Any], command: str,
                   figs: dict[str, str], env: str, date: str) -> str:
    order = [s for s in ["lr-effect", "lr-catch-up", "trainability", "scratch-vs-inherit",
                         "crossval"] if s in studies]
    seeds = {s: len(studies[s].seeds) for s in order}
    def how(t: dict[str, Any]) -> str:
        notes = [f"{t['workers']} workers"] if t.get("workers", 1) > 1 else []
        if t.get("reused"):
            notes.append(f"{t['reused']} of {t['cells']} cells reused from an earlier run")
        return f" ({'; '.join(notes)})" if notes else ""

    wall = ", ".join(f"{s} {timings[s]['seconds']:.0f} s{how(timings[s])}"
                     for s in order if s in timings)
    seed_txt = ", ".join(f"{s} {n}" for s, n in seeds.items())
    single = [s for s, n in seeds.items() if n == 1]
    out = ["# Findings: what the CPU presets measured", "",
           "Generated, every number and verdict, by one command from the current code "
           "(`make findings` runs it; do not edit by hand):", "",
           "```bash", command, "```", "",
           f"- date: {date}; machine: {env}",
           f"- seeds per study: {seed_txt}" + (
               f" ({', '.join(single)}: **single seed, noisy**: no spread, and a verdict on "
               "one seed can flip)" if single else ""),
           f"- study wall times: {wall or 'not recorded'} (measured on a shared machine; "
           "a rerun reuses finished cells and keeps these times)",
           "- accuracies are final-epoch top-1 test accuracies in % (never the best test "
           "epoch); a cell is mean ± std (ddof 1) over seeds, a bare number is one seed",
           "- verdicts compare cells seed by seed: **yes** / **no** when every seed agrees, "
           "**mixed** when the seeds disagree in sign, **partly** when the sub-claims differ; "
           "*single seed: noisy* where only one seed exists",
           "",
           "The CPU presets use Fashion-MNIST with LeNet-5 / MLP-7-Linear: they test the "
           "*shape* of the paper's findings (orderings, gaps), not its CIFAR/ImageNet numbers. "
           "Every table and figure is also in the store's report "
           f"(`prunebench report {studies[order[0]].path.parent.parent} --format md`).", "",
           md_table(["paper finding", "held at CPU scale?"], summary_rows(studies), "ll"), ""]
    for s in order:
        out += SECTIONS[s](studies[s], figs)
    return "\n".join(out).rstrip() + "\n"


def load(out: Path, names: list[str]) -> dict[str, Any]:
    from prunebench.report.data import load_study_data

    studies = {}
    for name in names:
        path = out / "studies" / f"{name}-cpu.json"
        if not path.is_file():
            print(f"[findings] warning: no manifest {path}", file=sys.stderr)
            continue
        st = load_study_data(path, out)
        if st.missing:
            print(f"[findings] warning: {name}: {st.missing} cells without a finished run",
                  file=sys.stderr)
        studies[name] = st
    return studies


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/findings", help="run store (default runs/findings)")
    ap.add_argument("--seeds", default="2",
                    help='seeds per study: "2", or "2,trainability=1,crossval=1"')
    ap.add_argument("--only", default=None, help="comma-separated studies (default: all five)")
    ap.add_argument("--workers", type=int, default=1, help="parallel cells (process backend)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per process")
    ap.add_argument("--reuse", action="store_true", help="no training: write from the store")
    ap.add_argument("--doc", default=str(ROOT / "docs" / "findings.md"))
    ap.add_argument("--readme", default=str(ROOT / "README.md"))
    ap.add_argument("--figures", default=str(ROOT / "docs" / "figures"))
    ap.add_argument("--demo-out", default="runs/demo",
                    help="the README block comes from this store, filled by make demo's own "
                         "command (serial, DEMO_THREADS torch threads) when it lacks lr-effect")
    args = ap.parse_args(argv)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
        import torch

        torch.set_num_threads(args.threads)
    names = STUDIES if not args.only else [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in names if s not in STUDIES]
    if bad:
        raise SystemExit(f"error: unknown study {bad[0]!r}; studies: {', '.join(STUDIES)}")
    out = Path(args.out)
    seeds = parse_seeds(args.seeds, names)
    if args.reuse:
        path = out / TIMINGS
        timings = json.loads(path.read_text()) if path.is_file() else {}
    else:
        timings = run_all(out, seeds, workers=args.workers)
    studies = load(out, names)
    if not studies:
        raise SystemExit(f"error: no study manifests in {out}/studies")
    figs = copy_figures(out, studies, Path(args.figures))
    argv_txt = " ".join(sys.argv[1:] if argv is None else argv)
    command = f".venv/bin/python scripts/findings.py {argv_txt}".strip()
    path = out / COMMAND
    if args.reuse and path.is_file():
        # the numbers come from the run that trained them: show that command, and this one
        command = (f"{path.read_text().strip()}\n# tables and figures rewritten from the "
                   f"store by:\n{command}")
    elif not args.reuse:
        from prunebench import io

        io.write_text(path, command + "\n")
    doc = write_findings(studies, timings, command, figs, machine(), time.strftime("%Y-%m-%d"))
    Path(args.doc).write_text(doc)
    print(f"[findings] wrote {args.doc}")
    if "lr-effect" in names:
        demo = demo_study(Path(args.demo_out), reuse=args.reuse)
        readme = Path(args.readme)
        readme.write_text(replace_block(readme.read_text(), demo_block(demo)))
        print(f"[findings] rewrote the demo block of {readme} from {args.demo_out}")
    return 0


#: torch threads of ``make demo`` (the Makefile's DEMO_THREADS): CPU results depend on it
DEMO_THREADS = "2"
#: the environment of ``make demo`` (the Makefile's DEMO_ENV): its threads and the AVX2
#: kernel level (CPU results also depend on the vector instructions the kernels use)
DEMO_ENV = {"OMP_NUM_THREADS": DEMO_THREADS, "MKL_NUM_THREADS": DEMO_THREADS,
            "ATEN_CPU_CAPABILITY": "avx2", "DNNL_MAX_CPU_ISA": "AVX2"}


def demo_study(out: Path, *, reuse: bool) -> Any:
    """The lr-effect CPU preset exactly as ``make demo`` runs it (its own store, serial, the
    demo's thread count), so the README quotes what a fresh ``make demo`` prints."""
    import subprocess

    if not reuse and not list((out / "studies").glob("lr-effect-cpu*.json")):
        env = {**os.environ, **DEMO_ENV}
        exe = Path(sys.executable).with_name("prunebench")
        cmd = [str(exe), "study", "lr-effect", "--preset", "cpu", "--out", str(out), "--quiet",
               "--no-report"]
        print(f"[findings] running the demo: {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, env=env, check=True)
    found = load(out, ["lr-effect"])
    if "lr-effect" not in found:
        raise SystemExit(f"error: no lr-effect study in {out}: run make demo first")
    return found["lr-effect"]


if __name__ == "__main__":
    sys.exit(main())
