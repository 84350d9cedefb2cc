"""The small things: lazy torch at start-up, CLI consistency, README and LICENSE."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prunebench.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


# ---------------------------------------------------------------- start-up


def test_importing_the_cli_does_not_import_torch():
    code = ("import sys, prunebench, prunebench.cli; "
            "print('torch' in sys.modules, 'prunebench.pipeline' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "False"]


def test_import_prunebench_api_still_works():
    import prunebench

    assert callable(prunebench.run) and callable(prunebench.load_recipe)
    assert prunebench.RunResult.__name__ == "RunResult"
    assert "run" in dir(prunebench)
    with pytest.raises(AttributeError):
        prunebench.no_such_name  # noqa: B018


# ---------------------------------------------------------------- app options


def test_version_and_h_alias():
    import prunebench

    res = invoke("--version")
    assert res.exit_code == 0 and res.output.strip() == f"prunebench {prunebench.__version__}"
    top = invoke("-h")
    assert top.exit_code == 0 and "Usage" in top.output and "methods" in top.output
    sub = invoke("runs", "-h")
    assert sub.exit_code == 0 and "--where" in sub.output


def test_flags_show_no_bool_value_hint():
    for cmd in ("runs", "study", "report", "run"):
        res = invoke(cmd, "--help")
        assert res.exit_code == 0
        assert "<bool>" not in res.output, cmd
    assert "<path>" in invoke("runs", "--help").output  # options with values keep theirs


def test_help_reads_as_one_line_per_command_and_value():
    """The command list shows one summary sentence per command (no docstring line breaks
    mid-sentence) and a repeatable option names its one value, not ``list[str]``."""
    top = invoke("-h").output
    assert "init,\n" not in top and "LR, seed" not in top
    for cmd in ("runs", "run", "study", "compare", "report", "card", "calibrate", "describe"):
        out = invoke(cmd, "--help").output
        assert "list[" not in out, cmd
    assert "(repeatable)" in invoke("runs", "--help").output


def test_report_takes_out_like_every_command(tmp_path):
    missing = tmp_path / "nope"
    by_opt = invoke("report", "--out", str(missing))
    by_arg = invoke("report", str(missing))
    assert by_opt.exit_code == by_arg.exit_code == 2
    assert "nope" in by_opt.output and "nope" in by_arg.output
    both = invoke("report", str(tmp_path / "a"), "--out", str(tmp_path / "b"))
    assert both.exit_code == 2 and "one store" in both.output


def test_study_help_mentions_list_and_list_shows_presets():
    from prunebench.studies import STUDIES, load_study

    assert "study list" in invoke("study", "--help").output
    res = invoke("study", "list")
    assert res.exit_code == 0
    for name in STUDIES.names():
        assert name in res.output
        for preset in load_study(name).presets:
            assert preset in res.output


def test_methods_lists_criteria_and_schedules():
    import prunebench.pruning  # noqa: F401
    from prunebench.pruning.context import CRITERIA
    from prunebench.pruning.schedules import PRUNE_SCHEDULES

    res = invoke("methods")
    assert res.exit_code == 0, res.output
    for name in CRITERIA.names():
        assert re.search(rf"^\s+{re.escape(name)}\s", res.output, re.M), name
    for name in PRUNE_SCHEDULES.names():
        assert name in res.output
    assert re.search(r"taylor_fo\s+needs data", res.output)
    assert re.search(r"\bl1\s+no data", res.output)


def test_describe_prints_a_human_summary_and_json_stays_raw():
    import json

    res = invoke("describe", "resnet20", "--prune", "0.5")
    assert res.exit_code == 0, res.output
    assert "param_sparsity:" not in res.output
    assert re.search(r"\d+\.\d\d % sparsity", res.output)
    assert re.search(r"speedup\s+\d+\.\d\dx", res.output)
    raw = json.loads(invoke("describe", "resnet20", "--prune", "0.5", "--json").output)
    assert isinstance(raw["param_sparsity"], float)


def test_target_speedup_says_how_close_it_gets():
    import json

    res = invoke("describe", "resnet20", "--target-speedup", "2", "--json")
    info = json.loads(res.output)
    target = info["target"]
    assert target["kind"] == "speedup" and target["target"] == 2
    assert target["achieved"] >= 2 and target["below"]["speedup"] < 2
    assert target["below"]["ratio"] < target["ratio"] == info["solved_ratio"]
    text = invoke("describe", "resnet20", "--target-speedup", "2").output
    assert "target speedup 2x: achieved" in text and "whole filters" in text


# ---------------------------------------------------------------- README and LICENSE


README = (ROOT / "README.md").read_text()


def _listed(marker: str) -> set[str]:
    block = README.split(f"<!-- registry:{marker} -->")[1].split(f"<!-- /registry:{marker}")[0]
    return set(re.findall(r"`([^`]+)`", block))


def test_readme_lists_every_model():
    from prunebench.models import MODELS

    assert _listed("models") == set(MODELS.names())


def test_readme_lists_every_study_and_preset():
    from prunebench.studies import STUDIES, load_study

    block = README.split("<!-- registry:studies -->")[1].split("<!-- /registry:studies")[0]
    rows = {}
    for line in block.splitlines():
        m = re.match(r"\| `([^`]+)` \| (.*) \|$", line)
        if m:
            rows[m.group(1)] = set(re.findall(r"`([^`]+)`", m.group(2)))
    assert rows == {n: set(load_study(n).presets) for n in STUDIES.names()}


def test_readme_has_pip_install_with_every_extra():
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "pip install -e ." in README
    for extra in meta["optional-dependencies"]:
        assert f"pip install -e '.[{extra}]'" in README, extra


def test_readme_links_stay_inside_the_repository():
    for target in re.findall(r"\]\(([^)]+)\)", README):
        assert not re.match(r"[a-z]+:", target), target  # no http(s):, mailto:, ...
        path = target.split("#")[0]
        if path:
            resolved = (ROOT / path).resolve()
            assert resolved.is_relative_to(ROOT) and resolved.exists(), target


def test_license_matches_the_package_metadata():
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    text = (ROOT / "LICENSE").read_text()
    assert meta["license"]["text"] == "MIT"
    assert text.startswith("MIT License") and "prunebench authors" in text
