"""Kill anything, resume cleanly: a study whose driver (and its worker processes) is
SIGKILLed mid-study finishes on the next start with exactly the runs of an uninterrupted
study, none duplicated, finished runs untouched, partial runs resumed from their last
epoch, and no stage left locked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from prunebench.pipeline import _coerce
from prunebench.plan import plan
from prunebench.store import RunStore
from prunebench.studies import load_study
from prunebench.studies.runner import dense_recipes, expand_study

STUDY = {
    "name": "kill-study",
    "title": "kill and resume",
    "setup": "S3.1",
    "presets": {
        "cpu": {
            "base": {
                "data": {"name": "synthetic", "batch_size": 64, "val_size": 128},
                "model": {"name": "mlp", "kwargs": {"depth": 3, "width": 16}},
                "pretrain": {"epochs": 2, "lr": "0:0.1"},
                "prune": {"method": "l1", "layers": 0.5},
                "retrain": {"epochs": 8, "lr": "0:0.01,4:0.001"},
            },
            "columns": {"key": "prune.layers", "values": [0.3, 0.6]},
            "rows": [
                {"label": "LR 0.01", "set": {"retrain.lr": "0:0.01,4:0.001"}},
                {"label": "LR 0.001", "set": {"retrain.lr": "0:0.001,4:0.0001"}},
            ],
            "seeds": 2,
        }
    },
}

PRUNEBENCH = Path(sys.executable).with_name("prunebench")


def _start(study: Path, out: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PRUNEBENCH_LEASE_TIMEOUT": "5"}
    cmd = [str(PRUNEBENCH), "study", str(study), "--out", str(out), "--preset", "cpu",
           "--workers", "2", "--backend", "process", "--stack", "1", "--quiet",
           "--no-report"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own process group, workers too


def _expected_ids(study: Path) -> set[str]:
    spec = load_study(str(study))
    recipes = [c.recipe for c in expand_study(spec, "cpu")]
    recipes += list(dense_recipes(spec, "cpu").values())
    return {plan(_coerce(r, None, None, None))[-1].key for r in recipes}


def _runs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if len(p.name) == 12 and p.is_dir())


def _finished(out: Path) -> list[Path]:
    return [r for r in _runs(out) if (r / "result.json").is_file()]


def _partial(out: Path) -> list[Path]:
    """Unfinished runs with a retraining checkpoint and at least one retrained epoch."""
    return [r for r in _runs(out) if not (r / "result.json").is_file()
            and (r / "checkpoints" / "latest.pt").is_file()
            and any(m.get("phase") == "retrain" for m in _metrics(r))]


def _metrics(run: Path) -> list[dict]:
    p = run / "metrics.jsonl"
    try:
        text = p.read_text()
    except OSError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_sigkill_the_study_then_resume(tmp_path):
    study = tmp_path / "kill_study.yaml"
    study.write_text(yaml.safe_dump(STUDY))
    out = tmp_path / "runs"
    expected = _expected_ids(study)
    assert len(expected) == 2 * 2 * 2 + 2  # the cells and one dense run per seed

    proc = _start(study, out)
    t0 = time.monotonic()
    try:
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() - t0 < 300, "no run finished while another was part-way"
            if out.is_dir() and _finished(out) and _partial(out):
                # freeze the whole group, then look again: a tiny run can finish between a
                # look and the kill, so the state is judged with nothing running
                os.killpg(proc.pid, signal.SIGSTOP)
                time.sleep(0.2)
                if _finished(out) and _partial(out):
                    break
                os.killpg(proc.pid, signal.SIGCONT)
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, mid-study
        proc.wait(30)

    finished = {r.name: (r / "result.json").stat().st_mtime_ns
                for r in _runs(out) if (r / "result.json").is_file()}
    partial = {r.name: _metrics(r) for r in _partial(out)}
    assert finished and partial and set(finished) < expected  # killed part-way

    again = _start(study, out)
    text = again.communicate(timeout=600)[0].decode()
    assert again.returncode == 0, text[-3000:]

    # exactly the runs of an uninterrupted study, each once
    assert {r.name for r in _runs(out)} == expected
    manifest = json.loads((out / "studies" / "kill-study-cpu.json").read_text())
    assert {c["run"] for c in manifest["cells"]} <= expected
    rows = RunStore(out).list_runs()
    assert sorted(r["id"] for r in rows) == sorted(expected)
    assert {r["status"] for r in rows} == {"done"}
    for rid in expected:
        result = json.loads((out / rid / "result.json").read_text())
        assert result["status"] == "done"
        lines = _metrics(out / rid)
        keys = [(m["phase"], m["epoch"]) for m in lines]
        assert len(keys) == len(set(keys)), f"run {rid} repeats epochs: {keys}"
    # finished runs untouched
    for rid, mtime in finished.items():
        assert (out / rid / "result.json").stat().st_mtime_ns == mtime
    # partial runs resumed from their last checkpointed epoch: the epochs trained before the
    # kill are kept as they were (their timings included), not trained again
    for rid, before in partial.items():
        after = _metrics(out / rid)
        trained = [m for m in before if m["phase"] == "retrain"][:-1]  # the last may be
        for m in trained:                                               # after the checkpoint
            assert m in after, f"run {rid}: retrain epoch {m['epoch']} was trained again"
    # the killed processes' leases were taken over; no stage or run is left locked
    assert not list(out.rglob("*.lease"))
