"""Benchmark cards: a Markdown (+ JSON) summary of one or more runs that a paper can cite.

A card states the setup the runs achieved (their fingerprint, and what another result
must share to be compared under each setup S1..SX-B), every hyper-parameter of all stages
in standard form (LR schedule strings), base model identity and dense accuracy, data
source and checksum, seeds, software versions, device, the final-epoch accuracy (never
the best test epoch; the best-validation epoch is shown as such), trainability accuracy,
and the command that reproduces each run. It takes a list of run ids so studies can
reuse it for their cards.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from prunebench import io
from prunebench.compare.calibrate import calibrated_picks
from prunebench.compare.comparison import compare, configurations
from prunebench.compare.errors import CompareError
from prunebench.compare.fingerprint import Fingerprint, fingerprint
from prunebench.compare.setups import DESCRIPTION, SETUPS
from prunebench.compare.stats import summarize
from prunebench.recipe import recipe_hash
from prunebench.store import RunStore


def requirements(f: Fingerprint) -> dict[str, str]:
    """What another result must share with ``f`` to be compared under each setup."""
    s1 = (f"dataset {f.dataset} ({f.split}, data {f.data}), network {f.model}, "
          f"param sparsity {f.param_sparsity:.2f}% or speedup {f.speedup:.2f}x (within 2%)")
    recipe = (f"retrain LR schedule {f.retrain_lr}, batch size {f.batch_size}, weight decay "
              f"{f.weight_decay:g}, momentum {f.momentum:g}, nesterov {f.nesterov}, "
              f"augmentation {f.augment}, precision {f.precision}")
    return {
        "S1": s1,
        "S2": f"S1 + base model {f.base}",
        "S3.1": f"S2 + {f.retrain_epochs} retraining epochs",
        "S3.2": f"S3.1 + {recipe}",
        "S4.1": f"S3.2 + {f.prune_epochs} pruning epochs",
        "S4.2": f"S4.1 + pruning LR schedule {f.prune_lr}",
        "SX-A": f"S2 + {f.total_epochs} total epochs (pretrain + prune + retrain)",
        "SX-B": f"S2 + {f.total_train_macs:.4g} total training MACs (within 2%)",
    }


def _hparams(recipe: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    retrain = dict(recipe.get("retrain") or {})
    eff = result.get("retrain") or {}
    if eff:
        retrain.update({"epochs": eff.get("epochs"), "lr": eff.get("lr")})
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


def _run_entry(out: Path, row: dict[str, Any], f: Fingerprint) -> dict[str, Any]:
    res = row["result"]
    dense = res.get("dense") or {}
    pruned = res.get("pruned") or {}
    data = res.get("data") or {}
    return {
        "id": f.run_id,
        "method": f.label,
        "seed": f.seed,
        "final_test_acc": res.get("test_acc"),
        "final_val_acc": res.get("val_acc"),
        "best_val_epoch": res.get("best_val"),
        "ta": res.get("ta"),
        "params": pruned.get("params_pruned", dense.get("params")),
        "macs": pruned.get("macs_pruned", dense.get("macs")),
        "param_sparsity": f.param_sparsity,
        "flops_sparsity": f.flops_sparsity,
        "speedup": f.speedup,
        "base_model": {"identity": f.base, "dense_test_acc": dense.get("test_acc"),
                       "params": dense.get("params"), "macs": dense.get("macs"),
                       "sha256": dense.get("sha256")},
        "data": {"name": data.get("name"), "source": data.get("source"),
                 "checksum": data.get("checksum"), "train_images": data.get("train_images")},
        "epochs": res.get("epochs"),
        "train_macs": res.get("train_macs"),
        "device": res.get("device"),
        "torch": res.get("torch"),
        "calibrated": f.calibrated,
        "chosen_lr": f.chosen_lr,
        "hyperparameters": _hparams(row["recipe"], res),
        "fingerprint": f.to_dict(),
        "setups": requirements(f),
        "reproduce": f"prunebench run {out / f.run_id / 'recipe.yaml'} --out {out}",
    }


def build_card(run_ids: list[str], out: str | os.PathLike[str] = "runs") -> dict[str, Any]:
    """The card's content (JSON-able) for one or more runs of a store."""
    import prunebench

    if not run_ids:
        raise CompareError("card needs at least one run id")
    store = RunStore(out)
    picks, _ = calibrated_picks(out)
    rows, fps = [], []
    for rid in run_ids:
        row = store.load(rid)
        if (row.get("result") or {}).get("status") != "done":
            raise CompareError(f"run {row['id']!r} is not finished: no card")
        rows.append(row)
        fps.append(fingerprint(row, calibration=picks.get(row["id"])))
    outp = Path(out)
    entries = [_run_entry(outp, r, f) for r, f in zip(rows, fps, strict=True)]
    methods = []
    for c in configurations(fps):
        s = summarize(c.accs)
        methods.append({"method": c.label, "config": c.key, "seeds": [f.seed for f in c.runs],
                        "final_test_acc": s.to_dict(), "text": s.text()})
    report = compare(fps) if len(fps) > 1 else None
    return {
        "card": "prunebench benchmark card",
        "runs": entries,
        "methods": methods,
        "comparison": report,
        "software": {"prunebench": prunebench.__version__,
                     "torch": sorted({str(e["torch"]) for e in entries}),
                     "python": platform.python_version() + " (when the card was written)"},
        "seeds": sorted({f.seed for f in fps}),
        "accuracy": "final-epoch top-1 test accuracy (%), never the best test epoch",
    }


def _md_value(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}={_md_value(x)}" for k, x in v.items()) or "-"
    if isinstance(v, list):
        return "[" + ", ".join(_md_value(x) for x in v) + "]"
    return "-" if v is None else str(v)


def render_markdown(card: dict[str, Any]) -> str:
    runs = card["runs"]
    first = runs[0]
    fp = first["fingerprint"]
    title = f"{fp['dataset']} / {fp['model']}: " + ", ".join(m["method"] for m in card["methods"])
    lines = [f"# prunebench card: {title}", ""]
    lines += ["## Result", "", f"Accuracy: {card['accuracy']}.", "",
              "| method | seeds | final-epoch test acc |", "|---|---|---|"]
    for m in card["methods"]:
        lines.append(f"| {m['method']} | {_md_value(m['seeds'])} | {m['text']} |")
    lines.append("")
    lines += ["## Setup achieved", ""]
    if card["comparison"] is None:
        lines.append("One run: its own fingerprint below. Another result is comparable with it "
                     "under a setup when it shares what that setup lists:")
    else:
        for g in card["comparison"]["groups"]:
            names = ", ".join(m["method"] for m in g["methods"])
            lines.append(f"- {names}: setup {g['setup'] or '-'}"
                         + (f" ({g['reason']})" if g["reason"] else ""))
        lines += ["", "Each run is comparable with another result under a setup when it shares "
                  f"what that setup lists (for run {first['id']}):"]
    lines.append("")
    lines += ["| setup | meaning | must share |", "|---|---|---|"]
    for s in SETUPS:
        lines.append(f"| {s} | {DESCRIPTION[s]} | {first['setups'][s]} |")
    lines.append("")
    for e in runs:
        lines += [f"## Run {e['id']} ({e['method']}, seed {e['seed']})", ""]
        rows = [
            ("final-epoch test acc", e["final_test_acc"]),
            ("final-epoch val acc", e["final_val_acc"]),
            ("best-validation epoch (val, test there)", e["best_val_epoch"]),
            ("trainability accuracy (TA)", e["ta"]),
            ("params / MACs", f"{e['params']} / {e['macs']}"),
            ("param sparsity / FLOPs sparsity / speedup",
             f"{e['param_sparsity']:.2f}% / {e['flops_sparsity']:.2f}% / {e['speedup']:.2f}x"),
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
        lines += [f"| {k} | {_md_value(v)} |" for k, v in rows]
        lines += ["", "Hyper-parameters (all stages, LR schedules in standard form):", ""]
        lines += ["| section | settings |", "|---|---|"]
        lines += [f"| {k} | {_md_value(v)} |" for k, v in e["hyperparameters"].items()]
        lines += ["", "Reproduce:", "", "```bash", e["reproduce"], "```", ""]
    sw = card["software"]
    lines += ["## Software", "",
              f"prunebench {sw['prunebench']}, torch {', '.join(sw['torch'])}, "
              f"python {sw['python']}; seeds {_md_value(card['seeds'])}.", ""]
    return "\n".join(lines)


def expand_study_ids(names: list[str], out: str | os.PathLike[str] = "runs") -> list[str]:
    """Run ids, with any study name (``lr-effect`` or ``lr-effect-cpu``, a manifest in
    ``<out>/studies/``) replaced by the runs of its cells, in table order."""
    studies = Path(out) / "studies"
    ids: list[str] = []
    for name in names:
        manifests = sorted(studies.glob(f"{name}.json")) or sorted(studies.glob(f"{name}-*.json"))
        if not manifests:
            if name not in ids:
                ids.append(name)
            continue
        for m in manifests:
            for cell in json.loads(m.read_text())["cells"]:
                if cell["run"] not in ids:
                    ids.append(cell["run"])
    return ids


def write_card(
    run_ids: list[str],
    out: str | os.PathLike[str] = "runs",
    path: str | os.PathLike[str] | None = None,
) -> tuple[Path, Path]:
    """Write ``card.md`` and ``card.json`` (next to it); returns both paths. Default place:
    ``<out>/<id>/card.md`` for one run, ``<out>/cards/<hash>.md`` for several. A study name
    stands for all its runs."""
    card = build_card(expand_study_ids(run_ids, out), out)
    ids = [e["id"] for e in card["runs"]]
    if path is None:
        md = (Path(out) / ids[0] / "card.md" if len(ids) == 1
              else Path(out) / "cards" / f"{recipe_hash(sorted(ids))}.md")
    else:
        md = Path(path)
        if md.suffix != ".md":
            md = md.with_suffix(md.suffix + ".md") if md.suffix else md.with_suffix(".md")
    js = md.with_suffix(".json")
    io.write_text(md, render_markdown(card))
    io.write_json(js, card)
    return md, js
