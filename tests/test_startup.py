"""Start-up cost: ``prunebench runs`` / ``show`` read a store without importing torch.

Importing torch costs ~1.5 s; the listing commands must not pay it (issue 13). The check
runs in a fresh interpreter, through the CLI module and the library functions the two
commands call, including the rendering of their tables.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from prunebench import api, runs_view

TINY = Path(__file__).resolve().parent / "fixtures" / "tiny.yaml"

CHECK = textwrap.dedent("""
    import json, sys
    import prunebench.cli as cli
    from prunebench.report.terminal import metrics_table, runs_table

    out = sys.argv[1]
    assert "torch" not in sys.modules, "import prunebench.cli"
    rows = cli.runs_view.runs(out)
    runs_table(rows, width=80)
    runs_table(cli.runs_view.runs(out, where=["status=done"], sort="-test_acc"), width=80)
    assert "torch" not in sys.modules, "runs"
    data = cli.runs_view.show(rows[0]["id"][:8], out)
    recipe, notes = cli.runs_view.effective_recipe(data)
    cli.runs_view.rounded({"test_acc": data["record"].test_acc})
    metrics_table(data["metrics"])
    assert "torch" not in sys.modules, "show"
    print(json.dumps({"n": len(rows), "torch": "torch" in sys.modules}))
""")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("startup") / "runs"
    items = api.run_all(TINY, out)
    assert [r.status for _, r in items] == ["done"]
    return out


def test_runs_and_show_do_not_import_torch(store: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", CHECK, str(store)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"n": 1, "torch": False}


def test_runs_cli_does_not_import_torch(store: Path) -> None:
    """The commands themselves, end to end in one interpreter (typer's runner)."""
    code = textwrap.dedent("""
        import sys
        from typer.testing import CliRunner
        from prunebench.cli import app
        out = sys.argv[1]
        r = CliRunner().invoke(app, ["runs", "--out", out, "--json"])
        assert r.exit_code == 0, r.output
        import json
        run_id = json.loads(r.output)[0]["id"]
        r = CliRunner().invoke(app, ["show", run_id, "--out", out])
        assert r.exit_code == 0, r.output
        print("torch" in sys.modules)
    """)
    proc = subprocess.run([sys.executable, "-c", code, str(store)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False"


def test_api_reexports_the_store_readers() -> None:
    for name in ("runs", "show", "effective_recipe", "rounded", "RUN_FIELDS", "_num_eq"):
        assert getattr(api, name) is getattr(runs_view, name)


@pytest.fixture(scope="module")
def study_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from prunebench.studies import run_studies

    out = tmp_path_factory.mktemp("startup-study") / "runs"
    [manifest] = run_studies(str(Path(__file__).parent / "fixtures" / "tiny_study.yaml"), out,
                             preset="cpu", seeds=1)
    assert manifest["complete"]
    return out


def test_compare_and_report_do_not_import_torch(study_store: Path) -> None:
    """Reading verdicts and reports off a study store never loads torch (issue 13)."""
    code = textwrap.dedent("""
        import sys
        from typer.testing import CliRunner
        from prunebench.cli import app
        out = sys.argv[1]
        for args in (["compare", "--out", out], ["report", out],
                     ["report", out, "--format", "md"], ["report", out, "--format", "html"],
                     ["runs", "--out", out, "--where", "status=done", "--sort", "-test_acc"]):
            r = CliRunner().invoke(app, args)
            assert r.exit_code in (0, 3), (args, r.exit_code, r.output)
            assert "torch" not in sys.modules, args
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code, str(study_store)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "ok"
