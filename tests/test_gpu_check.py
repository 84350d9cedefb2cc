"""bench/gpu_check.py --cpu-smoke: every code path of the prepared GPU check, tiny, on CPU.

The GPU run itself is a benchmark (docs/benchmarks.md), never a timed test; this only checks
that the script the next GPU session runs as-is works end to end and writes its files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ("resnet56", "correctness", "stack", "pr09", "vgg19")


def _errors(node, path=""):
    if isinstance(node, dict):
        if "error" in node:
            yield f"{path}: {node['error']}"
        for k, v in node.items():
            yield from _errors(v, f"{path}.{k}")


def test_cpu_smoke_runs_every_check(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--cpu-smoke",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert (tmp_path / "gpu_check.md").read_text().startswith("# GPU check")
    assert res["meta"]["smoke"] is True
    assert not list(_errors(res)), list(_errors(res))
    for name in CHECKS:
        assert name in res and "skipped" not in res[name], name
    for part in ("reference", "eager_fp32", "fast"):
        assert res["resnet56"][part]["seconds_per_epoch"] > 0
        assert res["vgg19"][part]["seconds_per_epoch"] > 0
    assert res["resnet56"]["fast"]["speed"]["used"]["channels_last"] is True
    assert res["correctness"]["fast"]["epochs_done"] == res["correctness"]["epochs"]
    assert res["stack"]["throughput_x"] > 0 and res["stack"]["sequential_runs"] == res["stack"]["k"]
    assert res["pr09"]["mac_ratio"] > 5
    t6 = res["table6"]
    assert t6["epochs"] == 200 + 4 * (4 * 120 + 2 * 200)
    assert t6["sequential_minutes"] > 0 and t6["stacked_minutes"] > 0


def test_table6_projection_arithmetic():
    sys.path.insert(0, str(ROOT / "bench"))
    import gpu_check

    results = {
        "resnet56": {"fast": {"seconds_per_epoch": 1.0}},
        "pr09": {"pr09": {"seconds_per_epoch": 0.25}},
        "stack": {"sequential_seconds_per_epoch_each": [0.1], "images": 10000,
                  "throughput_x": 2.0},
    }
    t = gpu_check.project_table6(results)
    # PR 0.5 epoch = 0.1 s * 5 (subset of 10k -> 50k images)
    assert t["per_ratio"]["0.5"]["seconds_per_epoch"] == 0.5
    assert t["per_ratio"]["0.9"]["seconds_per_epoch"] == 0.25
    seq = 200 * 1.0 + sum(r["seconds_per_epoch"] * 880 for r in t["per_ratio"].values())
    assert t["sequential_minutes"] == round(seq / 60, 1)
    stacked = 200 * 1.0 + sum(r["seconds_per_epoch"] * 880 / 2 for r in t["per_ratio"].values())
    assert abs(t["stacked_minutes"] - round(stacked / 60, 1)) <= 0.1
    assert "error" in gpu_check.project_table6({})
