"""Benchmark cards: a Markdown (+ JSON) summary of one or more runs that a paper can cite.

A card states the setup the runs achieved (computed from their fingerprints, never
declared: the comparison of their methods and, for a study, the setup each column's rows
actually share beside the study's declared one; plus what another result must share to
be compared under each setup S1..SX-B), every hyper-parameter of all stages in standard
form (LR schedule strings), base model identity and dense accuracy, data source and
checksum, seeds, software versions, device, the final-epoch accuracy (never the best test
epoch; the best-validation epoch is shown as such), trainability accuracy, and the
command that reproduces each run.

:func:`build_card` is the one card builder: ``prunebench card RUN_ID|STUDY`` renders it as
Markdown + JSON (:func:`write_card`), and the HTML study report shows a compact view of
the same content (:func:`study_card`, :func:`card_fields`). Values are read from each
run's typed record (:class:`prunebench.record.RunRecord`).
"""

from __future__ import annotations

import glob
import json
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prunebench import io
from prunebench.compare.calibrate import calibrated_picks
from prunebench.compare.comparison import compare, configurations
from prunebench.compare.errors import CompareError
from prunebench.compare.fingerprint import Fingerprint, compress, fingerprint
from prunebench.compare.setups import DESCRIPTION, SETUPS
from prunebench.compare.stats import summarize
from prunebench.errors import StoreError
from prunebench.recipe import recipe_hash
from prunebench.record import RunRecord
from prunebench.store import RunStore, check_name, check_run_id

if TYPE_CHECKING:
    from prunebench.report.data import StudyData


def requirements(f: Fingerprint) -> dict[str, str]:
    """What another result must share with ``f`` to be compared under each setup."""
    rate = (f"param sparsity {f.param_sparsity:.2f}%" if f.param_sparsity is not None
            else "param sparsity unknown")
    if f.speedup is not None:
        rate += f" or speedup {f.speedup:.2f}x"
    s1 = (f"dataset {f.dataset} ({f.split}, data {f.data}), network {f.model}, "
          f"{rate} (within 2%)")
    recipe = ", ".join(f"{k} {v}" for k, v in f.recipe)
    traj = "; ".join(compress(f.trajectory)) or "none"
    at = "the end" if f.pruned_at is None else f"epoch {f.pruned_at}"
    return {
        "S1": s1,
        "S2": f"S1 + base {f.base} (weights from {at} of it)" if f.inherits
        else f"S1 + base {f.base} (scratch: no weights inherited)",
        "S3.1": f"S2 + {f.retrain_epochs} retraining epochs after the shared pretraining",
        "S3.2": f"S3.1 + per-epoch LR/SGD {traj}; {recipe}",
        "S4.1": f"S3.2 + {f.prune_epochs} pruning epochs",
        "S4.2": f"S4.1 + pruning LR schedule {f.prune_lr}",
        "SX-A": f"S2 + {f.total_epochs} total epochs (inherited pretrain + prune + retrain)",
        "SX-B": f"S2 + {f.total_train_macs:.4g} total training MACs (within 2%)",
    }


def _hparams(recipe: dict[str, Any], rec: RunRecord) -> dict[str, Any]:
    retrain = dict(recipe.get("retrain") or {})
    if rec.retrain is not None:  # the retraining actually run (Scratch-E/B rewrite it)
        retrain.update({"epochs": rec.retrain.epochs, "lr": rec.retrain.lr})
    out = {
        "data": {k: v for k, v in (recipe.get("data") or {}).items() if k != "data_dir"},
        "model": recipe.get("model"),
        "pretrain": recipe.get("pretrain"),
        "base_model": recipe.get("base_model"),
        "prune": recipe.get("prune"),
        "retrain (effective)": retrain or None,
        "measure": recipe.get("measure"),
        "seed": recipe.get("seed"),
    }
    return {k: v for k, v in out.items() if v is not None}


def _dump(model: Any) -> Any:
    return None if model is None else model.model_dump(mode="json")


def _run_entry(out: Path, row: dict[str, Any], f: Fingerprint) -> dict[str, Any]:
    rec: RunRecord = row["record"]
    dense, pruned, data = rec.dense, rec.pruned, rec.data
    return {
        "id": f.run_id,
        "method": f.label,
        "seed": f.seed,
        "final_test_acc": rec.test_acc,
        "final_val_acc": rec.val_acc,
        "best_val_epoch": rec.best_val,
        "ta": _dump(rec.ta),
        "params": pruned.params_pruned if pruned is not None else dense.params,
        "macs": pruned.macs_pruned if pruned is not None else dense.macs,
        "param_sparsity": f.param_sparsity,
        "flops_sparsity": f.flops_sparsity,
        "speedup": f.speedup,
        "base_model": {"identity": f.base, "dense_test_acc": dense.test_acc,
                       "params": dense.params, "macs": dense.macs, "sha256": dense.sha256},
        "data": {"name": data.name, "source": data.source, "checksum": data.checksum,
                 "train_images": data.train_images},
        "epochs": _dump(rec.epochs),
        "train_macs": _dump(rec.train_macs),
        "device": rec.device,
        "torch": rec.torch,
        "calibrated": f.calibrated,
        "chosen_lr": f.chosen_lr,
        "hyperparameters": _hparams(row["recipe"], rec),
        "fingerprint": f.to_dict(),
        "setups": requirements(f),
        "reproduce": f"prunebench run {out / f.run_id / 'recipe.yaml'} --out {out}",
    }


def _study_section(study: StudyData) -> dict[str, Any]:
    """What a study adds to its card: the setups computed per column and per row (with
    the declaration / the row labels' claims beside them), data, model, reproduction."""
    cols = study.column_setups()
    rows = study.row_setups()
    values = dict(zip(study.columns, study.column_values, strict=False))
    finished = [r for r in study.all_runs if r.fingerprint is not None]
    return {
        "name": study.name,
        "preset": study.preset,
        "key": study.key,
        "title": study.title,
        "note": study.note,
        "declared_setup": study.declared_setup,
        "setup": study.setup_summary(),
        "setup_flagged": study.setup_flagged,
        "reference_row": study.rows[0] if study.rows else None,
        "columns": [{"column": c, "key": study.column_key, "value": values.get(c),
                     **cols[c].to_dict()} for c in study.columns],
        "rows": [{"row": r, "column": c, **rows[(r, c)].to_dict()}
                 for r in study.rows for c in study.columns],
        "data": study.data_label,
        "model": study.model,
        "dense_test_acc": study.dense_acc,  # None when cells descend from several
        "dense": study.dense_text(),
        "cells": len(study.cells),
        "finished_runs": len({r.id for r in finished}),
        "complete": study.complete,
        "reproduce": study.command or None,
    }


def card_content(
    rows: list[dict[str, Any]],
    fps: list[Fingerprint],
    out: str | os.PathLike[str] = "runs",
    *,
    study: StudyData | None = None,
    skipped: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """The card (JSON-able) of finished runs (store rows with their typed ``record``) and
    their fingerprints; ``study`` adds its computed setups, ``skipped`` lists runs left
    out (missing or unfinished)."""
    import prunebench

    outp = Path(out)
    entries = [_run_entry(outp, r, f) for r, f in zip(rows, fps, strict=True)]
    methods = []
    report = None
    problem = None
    try:
        for c in configurations(fps):
            s = summarize(c.accs)
            methods.append({"method": c.label, "config": c.key,
                            "seeds": [f.seed for f in c.runs], "runs": [f.run_id for f in c.runs],
                            "final_test_acc": s.to_dict(), "text": s.text()})
        report = compare(fps) if len(fps) > 1 else None
    except CompareError as exc:
        problem = str(exc)
    return {
        "card": "prunebench benchmark card",
        "title": None if study is None else f"{study.title} [{study.key}]",
        "study": None if study is None else _study_section(study),
        "runs": entries,
        "skipped": list(skipped or []),
        "methods": methods,
        "comparison": report,
        "comparison_error": problem,
        "software": {"prunebench": prunebench.__version__,
                     "torch": sorted({str(e["torch"]) for e in entries}),
                     "python": platform.python_version() + " (when the card was written)"},
        "seeds": sorted({f.seed for f in fps}),
        "accuracy": "final-epoch top-1 test accuracy (%), never the best test epoch",
    }


def build_card(
    run_ids: list[str],
    out: str | os.PathLike[str] = "runs",
    *,
    study: StudyData | None = None,
    skip_unfinished: bool = False,
) -> dict[str, Any]:
    """The card's content (JSON-able) for one or more runs of a store. A run that is not
    finished is an error, or with ``skip_unfinished`` (a study's card) left out and listed
    under ``skipped``. ``study`` (a loaded :class:`prunebench.report.data.StudyData` of
    these runs) adds the setups computed per column and row."""
    if not run_ids:
        raise CompareError("card needs at least one run id")
    store = RunStore(out)
    picks, _ = calibrated_picks(out)
    rows, fps, skipped = [], [], []
    seen: set[str] = set()
    for rid in dict.fromkeys(run_ids):
        try:
            row = store.load(rid)
        except StoreError as exc:
            if not skip_unfinished:
                raise
            skipped.append({"id": rid, "reason": f"missing ({exc})"})
            continue
        if row["id"] in seen:  # a prefix and the full id (or two prefixes) of one run
            continue
        seen.add(row["id"])
        rec = row.get("record")
        if rec is None or not rec.finished:
            status = rec.status if rec is not None else "no result"
            if not skip_unfinished:
                raise CompareError(f"run {row['id']!r} is not finished ({status}): no card")
            skipped.append({"id": row["id"], "reason": f"unfinished ({status})"})
            continue
        rows.append(row)
        fps.append(fingerprint(row, calibration=picks.get(row["id"])))
    return card_content(rows, fps, out, study=study, skipped=skipped)


def study_card(study: StudyData) -> dict[str, Any]:
    """The card of a loaded study (its runs as the report loaded them): what the HTML
    report shows and ``prunebench card STUDY`` writes."""
    rows, fps, skipped = [], [], []
    seen: set[str] = set()
    for c in study.cells:
        if c.run_id in seen:
            continue
        seen.add(c.run_id)
        if c.run is None:
            skipped.append({"id": c.run_id, "reason": "missing"})
        elif c.run.fingerprint is None:
            skipped.append({"id": c.run_id,
                            "reason": f"unfinished ({c.run.record.status})"})
        else:
            rows.append(c.run.row)
            fps.append(c.run.fingerprint)
    out = study.store if study.store is not None else Path("runs")
    return card_content(rows, fps, out, study=study, skipped=skipped)


# -- rendering ------------------------------------------------------------------------------


def _md_value(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}={_md_value(x)}" for k, x in v.items()) or "-"
    if isinstance(v, list):
        return "[" + ", ".join(_md_value(x) for x in v) + "]"
    return "-" if v is None else str(v)


def _md(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _distinct(values: list[Any]) -> str:
    seen = list(dict.fromkeys("-" if v is None else str(v) for v in values))
    return " | ".join(seen) or "-"


def card_title(card: dict[str, Any]) -> str:
    """The card's heading, short: the study's title, else the dataset / network and the
    methods (``"N methods"`` when more than two)."""
    if card.get("title"):
        return str(card["title"])
    runs, methods = card["runs"], card["methods"]
    if not runs:
        return "no finished runs"
    fp = runs[0]["fingerprint"]
    names = ([m["method"] for m in methods] if len(methods) <= 2
             else [f"{len(methods)} methods"])
    return f"{fp['dataset']} / {fp['model']}: " + ", ".join(names)


def _setup_lines(card: dict[str, Any]) -> list[str]:
    lines = ["## Setup achieved", "",
             "Computed from the runs' fingerprints (seed-matched), never taken from a "
             "declaration.", ""]
    st = card.get("study")
    if st is not None:
        lines += [f"Study: **{_md(st['setup'])}**.", ""]
        lines += ["| column | setup all rows share (computed) | declared | |", "|---|---|---|---|"]
        for c in st["columns"]:
            verdict = "" if c["met"] is None else ("met" if c["met"] else "**not met**")
            lines.append(f"| {_md(c['column'])} | {_md(c['label'])} | "
                         f"{_md(c['declared'] or '-')} | {verdict} |")
        lines += ["", f"Per row, the setup shared with the first row ({_md(st['reference_row'])})"
                  " of the same seed; a setup in a row label's parentheses is a claim:", ""]
        cols = [c["column"] for c in st["columns"]]
        lines += ["| row | " + " | ".join(_md(c) for c in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        by = {(r["row"], r["column"]): r for r in st["rows"]}
        for row in dict.fromkeys(r["row"] for r in st["rows"]):
            lines.append(f"| {_md(row)} | " + " | ".join(
                _md(by[(row, c)]["text"]) for c in cols) + " |")
        lines.append("")
    if card["comparison"] is None:
        if len(card["runs"]) == 1:
            lines.append("One run: its own fingerprint below. Another result is comparable "
                         "with it under a setup when it shares what that setup lists:")
    else:
        lines += ["Methods (runs that differ only in the seed), compared seed by seed:", ""]
        for g in card["comparison"]["groups"]:
            names = ", ".join(m["method"] for m in g["methods"])
            lines.append(f"- {names}: setup {g['setup'] or '-'}"
                         + (f" ({g['reason']})" if g["reason"] else ""))
    if card.get("comparison_error"):
        lines.append(f"- no comparison: {card['comparison_error']}")
    if card["runs"]:
        first = card["runs"][0]
        if card["comparison"] is not None:
            lines += ["", "Each run is comparable with another result under a setup when it "
                      f"shares what that setup lists (for run {first['id']}):"]
        lines += ["", "| setup | meaning | must share |", "|---|---|---|"]
        for s in SETUPS:
            lines.append(f"| {s} | {DESCRIPTION[s]} | {_md(first['setups'][s])} |")
    lines.append("")
    return lines


def render_markdown(card: dict[str, Any]) -> str:
    runs = card["runs"]
    lines = [f"# prunebench card: {card_title(card)}", ""]
    st = card.get("study")
    if st is not None:
        lines += [f"Study {st['name']} (preset {st['preset']}); data {st['data']}; model "
                  f"{st['model']}; {st['finished_runs']} finished run(s) of {st['cells']} "
                  "cells" + ("" if st["complete"] else " (study incomplete)") + ".", ""]
        if st["reproduce"]:
            lines += ["Reproduce:", "", "```bash", st["reproduce"], "```", ""]
    lines += ["## Result", "", f"Accuracy: {card['accuracy']}.", "",
              "| method | seeds | final-epoch test acc |", "|---|---|---|"]
    for m in card["methods"]:
        lines.append(f"| {_md(m['method'])} | {_md_value(m['seeds'])} | {m['text']} |")
    lines.append("")
    if card["skipped"]:
        lines += ["Skipped (not in this card): " + "; ".join(
            f"{s['id']} {s['reason']}" for s in card["skipped"]) + ".", ""]
    lines += _setup_lines(card)
    for e in runs:
        lines += [f"## Run {e['id']} ({e['method']}, seed {e['seed']})", ""]
        rows = [
            ("final-epoch test acc", e["final_test_acc"]),
            ("final-epoch val acc", e["final_val_acc"]),
            ("best-validation epoch (val, test there)", e["best_val_epoch"]),
            ("trainability accuracy (TA)", e["ta"]),
            ("params / MACs", f"{_md_value(e['params'])} / {_md_value(e['macs'])}"),
            ("param sparsity / FLOPs sparsity / speedup",
             f"{_num(e['param_sparsity'], '.2f')}% / {_num(e['flops_sparsity'], '.2f')}% / "
             f"{_num(e['speedup'], '.2f')}x"),
            ("base model", e["base_model"]["identity"]),
            ("base model dense test acc", e["base_model"]["dense_test_acc"]),
            ("data", f"{e['data']['name']}: {e['data']['source']}"),
            ("data checksum", e["data"]["checksum"]),
            ("epochs (pretrain, prune, retrain, total)", e["epochs"]),
            ("training MACs", e["train_macs"]),
            ("calibrated", f"yes, chosen LR {e['chosen_lr']:g}" if e["calibrated"] else "no"),
            ("device", e["device"]),
            ("torch", e["torch"]),
        ]
        lines += ["| field | value |", "|---|---|"]
        lines += [f"| {k} | {_md(_md_value(v))} |" for k, v in rows]
        lines += ["", "Hyper-parameters (all stages, LR schedules in standard form):", ""]
        lines += ["| section | settings |", "|---|---|"]
        lines += [f"| {k} | {_md(_md_value(v))} |" for k, v in e["hyperparameters"].items()]
        lines += ["", "Reproduce:", "", "```bash", e["reproduce"], "```", ""]
    sw = card["software"]
    lines += ["## Software", "",
              f"prunebench {sw['prunebench']}, torch {', '.join(sw['torch'])}, "
              f"python {sw['python']}; seeds {_md_value(card['seeds'])}.", ""]
    return "\n".join(lines)


def card_fields(card: dict[str, Any]) -> list[tuple[str, str]]:
    """A compact view of a card as ``(field, value)`` pairs: what the HTML report shows
    on top of a study (the full card is ``prunebench card STUDY``)."""
    runs = card["runs"]
    st = card.get("study")
    hp = [e["hyperparameters"] for e in runs]
    out: list[tuple[str, str]] = []
    if st is not None:
        out.append(("study", f"{st['name']} (preset {st['preset']})"))
        if st["note"]:
            out.append(("preset note", st["note"]))
        out.append(("comparison setup", st["setup"]))
        flagged = [f"{r['row']} @ {r['column']}: {r['text']}" for r in st["rows"]
                   if r["met"] is False]
        if flagged:
            out.append(("row claims not met", "; ".join(flagged)))
    out += [
        ("data", _distinct([f"{e['data']['name']}: {e['data']['source']}" for e in runs])),
        ("data checksum", _distinct([e["data"]["checksum"] for e in runs])),
        ("data loader", _distinct([_md_value({k: v for k, v in h.get("data", {}).items()
                                              if k in ("batch_size", "val_size",
                                                       "train_subset", "augment")})
                                   for h in hp])),
        ("model", st["model"] if st is not None else
         _distinct([e["fingerprint"]["model"] for e in runs])),
    ]
    dense = st["dense_test_acc"] if st is not None else None
    out.append(("dense model", f"{dense:.2f}% final-epoch test accuracy" if dense is not None
                else (st or {}).get("dense")
                or _distinct([e["base_model"]["dense_test_acc"] for e in runs])))
    out.append(("base models", f"{len({e['base_model']['identity'] for e in runs})} distinct"))
    out.append(("pretraining", _distinct([_md_value(h.get("pretrain")) for h in hp])))
    if st is not None:
        out.append((f"ratios ({st['columns'][0]['key'] if st['columns'] else '-'})",
                    "; ".join(f"{c['column']} = {c['value']}" for c in st["columns"])))
    by_id = {e["id"]: e for e in runs}
    for m in card["methods"]:
        mh = [by_id[r]["hyperparameters"] for r in m["runs"]]
        prune = _distinct([_md_value({k: v for k, v in (h.get("prune") or {}).items()
                                      if k in ("method", "granularity", "scheme", "schedule",
                                               "epochs", "lr")}) if h.get("prune") else "none"
                           for h in mh])
        retrain = _distinct([_md_value({k: v for k, v in (h.get("retrain (effective)") or {})
                                        .items() if k in ("epochs", "lr", "init", "budget",
                                                          "momentum", "weight_decay")})
                             for h in mh])
        out.append((f"method {m['method']}", f"final-epoch test acc {m['text']}; pruning "
                                              f"{prune}; retraining {retrain}"))
    sw = card["software"]
    out += [
        ("seeds", ", ".join(map(str, card["seeds"])) or "-"),
        ("accuracy reported", "final-epoch top-1 test accuracy (never the best epoch); "
                              "mean ± std (ddof=1) over seeds"),
        ("software", f"prunebench {sw['prunebench']}, torch {', '.join(sw['torch']) or '-'}, "
                     f"Python {sw['python']}"),
        ("device", _distinct([e["device"] for e in runs])),
    ]
    runs_text = f"{len(runs)} finished"
    if st is not None:
        runs_text += f" of {st['cells']} cells" + ("" if st["complete"] else
                                                   " (study incomplete)")
    if card["skipped"]:
        runs_text += "; skipped: " + "; ".join(f"{s['id']} {s['reason']}"
                                              for s in card["skipped"])
    out.append(("runs", runs_text))
    out.append(("reproduce", (st["reproduce"] if st is not None and st["reproduce"] else
                              _distinct([e["reproduce"] for e in runs]))))
    return out


def _manifests(name: str, out: str | os.PathLike[str]) -> list[Path]:
    """The study manifests a name stands for (``lr-effect``: every preset of it;
    ``lr-effect-cpu``: that one); none when it is not a study of the store. Only a slug
    names a study (:func:`prunebench.store.check_name`): a path never does."""
    try:
        check_name(name)
    except StoreError:
        return []
    studies = Path(out) / "studies"
    name = glob.escape(name)
    return sorted(studies.glob(f"{name}.json")) or sorted(studies.glob(f"{name}-*.json"))


def expand_study_ids(names: list[str], out: str | os.PathLike[str] = "runs") -> list[str]:
    """Run ids, with any study name (``lr-effect`` or ``lr-effect-cpu``, a manifest in
    ``<out>/studies/``) replaced by the runs of its cells, in table order."""
    ids: list[str] = []
    for name in names:
        manifests = _manifests(name, out)
        if not manifests:
            if name not in ids:
                ids.append(name)
            continue
        for m in manifests:
            try:
                cells = json.loads(m.read_text())["cells"]
                runs = [str(cell["run"]) for cell in cells]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise CompareError(f"study manifest {str(m)!r} cannot be read: "
                                   f"{type(exc).__name__}") from None
            for run in runs:
                if run not in ids:
                    ids.append(run)
    return ids


def write_card(
    run_ids: list[str],
    out: str | os.PathLike[str] = "runs",
    path: str | os.PathLike[str] | None = None,
) -> tuple[Path, Path]:
    """Write ``card.md`` and ``card.json`` (next to it); returns both paths. Default place:
    ``<out>/<id>/card.md`` for one run, ``<out>/cards/<hash>.md`` for several. A study name
    stands for all its runs; the card of one study (one name, one manifest) also holds the
    setups computed per column and row, and lists the runs it had to skip (missing or
    unfinished) instead of failing.

    The target is checked before anything is computed or written: a path that is a
    directory, below a file, or in a folder that cannot be written (a read-only store) is a
    one-line :class:`StoreError` naming it, and nothing is written."""
    if path is not None:
        _card_targets(_card_path(Path(path)), explicit=True)
    ids = expand_study_ids(run_ids, out)
    manifests = _manifests(run_ids[0], out) if len(run_ids) == 1 else []
    if len(manifests) == 1:
        from prunebench.report.data import load_study_data

        card = study_card(load_study_data(manifests[0], out))
    else:
        card = build_card(ids, out)
    ids = [e["id"] for e in card["runs"]] + [s["id"] for s in card["skipped"]] or ids
    if path is None:  # inside the store: an id is never a path
        md = (Path(out) / check_run_id(ids[0]) / "card.md" if len(ids) == 1
              else Path(out) / "cards" / f"{recipe_hash(sorted(ids))}.md")
    else:
        md = _card_path(Path(path))
    md, js = _card_targets(md, explicit=path is not None)
    try:
        io.write_text(md, render_markdown(card))
        io.write_json(js, card)
    except OSError as exc:  # the disk filled up, the folder vanished meanwhile
        raise StoreError(f"cannot write the card {str(md)!r}: {exc.strerror or exc}") from None
    return md, js


def _card_path(md: Path) -> Path:
    """``-o PATH`` as the card's Markdown file (``.md`` added unless it has it)."""
    if md.suffix != ".md":
        md = md.with_suffix(md.suffix + ".md") if md.suffix else md.with_suffix(".md")
    return md


def _card_targets(md: Path, *, explicit: bool) -> tuple[Path, Path]:
    """The card's two files, checked writable (:func:`prunebench.io.check_output`)."""
    hint = "" if explicit else "; write it elsewhere with -o PATH"
    js = md.with_suffix(".json")
    io.check_output(md, "the card", hint)
    io.check_output(js, "the card's JSON", hint)
    return md, js
