"""Figure properties, checked on the matplotlib objects the builders return: one legend per
figure, a dense reference line, one epoch axis for scratch and retrained rows, TA bars
from zero, no error bars for a single seed, a suptitle that describes the figure.

Uses the report tests' tiny study (tests/fixtures/tiny_study.yaml, 3 rows x 2 ratios x 2
seeds, a few seconds), run once per module.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from matplotlib.container import BarContainer, ErrorbarContainer

from prunebench.report.data import StudyData, load_study_data
from prunebench.report.figures import (
    DENSE_GID,
    accuracy_figure,
    jsv_figure,
    lr_figure,
    ratio_figure,
    ta_figure,
    write_figures,
)

FIXTURE = Path(__file__).parent / "fixtures" / "tiny_study.yaml"
BUILDERS = {"accuracy": accuracy_figure, "ta": ta_figure, "jsv": jsv_figure,
            "ratio": ratio_figure, "lr": lr_figure}
ACCURACY_LIKE = ("accuracy", "ratio", "lr")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from prunebench.studies import run_study

    out = tmp_path_factory.mktemp("figures_store")
    manifest = run_study(FIXTURE, out, preset="cpu")
    assert manifest["complete"]
    return out, out / "studies" / "tiny-study-cpu.json"


@pytest.fixture()
def study(store) -> StudyData:
    return load_study_data(store[1])


@pytest.fixture()
def single_seed(store, tmp_path) -> StudyData:
    """The same study with only seed 0's cells."""
    m = json.loads(store[1].read_text())
    m["cells"] = [c for c in m["cells"] if c["seed"] == 0]
    m["seeds"] = [0] if isinstance(m.get("seeds"), list) else 1
    m["dense_runs"] = {k: v for k, v in (m.get("dense_runs") or {}).items() if k == "0"}
    path = tmp_path / "studies" / "tiny-study-cpu.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(m))
    s = load_study_data(path, store[0])
    assert s.seeds == [0]
    return s


def _title(fig) -> str:
    """The suptitle with its wrapped lines joined."""
    return " ".join(fig.get_suptitle().split())


def _legends(fig) -> int:
    return len(fig.legends) + sum(ax.get_legend() is not None for ax in fig.axes)


def _errorbars(fig) -> list[ErrorbarContainer]:
    return [c for ax in fig.axes for c in ax.containers if isinstance(c, ErrorbarContainer)]


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_one_legend_per_figure(study, kind):
    fig = BUILDERS[kind](study)
    assert fig is not None
    assert _legends(fig) == 1
    if len(fig.axes) > 1:  # panels: one shared figure legend, none per panel
        assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    labels = [t.get_text() for leg in fig.legends for t in leg.get_texts()] or [
        t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert len(labels) == len(set(labels))
    if kind in ("accuracy", "jsv", "ratio"):
        assert set(study.rows) <= set(labels)


@pytest.mark.parametrize("kind", ACCURACY_LIKE)
def test_dense_reference_line(study, kind):
    fig = BUILDERS[kind](study)
    dense = study.dense_acc
    assert dense is not None
    for ax in fig.axes:
        lines = [ln for ln in ax.get_lines() if ln.get_gid() == DENSE_GID]
        assert len(lines) == 1
        assert list(lines[0].get_ydata()) == [pytest.approx(dense)] * 2
        assert list(lines[0].get_xdata()) == [0, 1]  # axhline: the whole width
    assert "dense" in _title(fig)


@pytest.mark.parametrize("kind", ["accuracy", "jsv"])
def test_scratch_and_retrained_share_one_epoch_axis(study, kind):
    fig = BUILDERS[kind](study)
    xlims = {ax.get_xlim() for ax in fig.axes}
    assert len(xlims) == 1
    lo, hi = xlims.pop()
    assert lo == 0
    curves = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid() != DENSE_GID]
    assert {ln.get_linestyle() for ln in curves} == {"-", "--"}  # scratch and retrained
    for ln in curves:
        assert lo <= min(ln.get_xdata()) and max(ln.get_xdata()) <= hi
    assert hi == max(max(ln.get_xdata()) for ln in curves)


def test_longer_scratch_budget_keeps_one_axis(study):
    """Scratch-B style: scratch rows train longer; retrained curves stay on the same epoch
    axis (from 0, not stretched to the panel) and the subtitle states both budgets."""
    for r in study.runs("Scratch (step)"):
        last = r.curve("test_acc")[-1][1]
        r.metrics += [{"phase": "retrain", "epoch": e, "test_acc": last} for e in (3, 4)]
    fig = accuracy_figure(study)
    assert {ax.get_xlim() for ax in fig.axes} == {(0.0, 4.0)}
    for ax in fig.axes:
        for ln in ax.get_lines():
            if ln.get_linestyle() == "-":
                assert max(ln.get_xdata()) == 2
    assert "scratch rows train 4 epochs, pruned rows retrain 2" in _title(fig)


def test_ta_bars_start_at_zero(study):
    fig = ta_figure(study)
    ax = fig.axes[0]
    assert ax.get_ylim()[0] == 0
    bars = [b for c in ax.containers if isinstance(c, BarContainer) for b in c]
    assert len(bars) == len(study.rows) * len(study.columns)
    assert all(b.get_y() == 0 and b.get_height() > 0 for b in bars)


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_no_error_bars_or_bands_for_a_single_seed(single_seed, kind):
    fig = BUILDERS[kind](single_seed)
    assert fig is not None
    assert _errorbars(fig) == []
    assert all(not ax.collections for ax in fig.axes)  # no fill_between std bands
    assert "single seed" in _title(fig)


@pytest.mark.parametrize("kind", ["ta", "ratio", "lr"])
def test_error_bars_with_two_seeds(study, kind):
    assert _errorbars(BUILDERS[kind](study))
    assert "2 seeds" in _title(BUILDERS[kind](study))


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_suptitle_belongs_to_the_figure(study, kind):
    fig = BUILDERS[kind](study)
    title = fig.get_suptitle()
    assert "tiny-study-cpu" in title
    head = {"accuracy": "Test accuracy", "ta": "Trainability", "jsv": "JSV",
            "ratio": "pruning ratio", "lr": "LR sensitivity"}[kind]
    assert head in title.splitlines()[0]
    if kind in ("accuracy", "jsv", "ratio"):  # both line styles drawn: the key is given
        assert "dashed: trained from scratch" in _title(fig)
    if kind == "lr":  # the LR figure has no scratch row: no line-style key
        assert "scratch" not in title


def test_line_style_key_only_when_both_kinds(study):
    study.manifest["rows"] = [r for r in study.rows if not r.startswith("Scratch")]
    assert "scratch" not in _title(ratio_figure(study))


def test_dollar_in_labels_is_literal(store, tmp_path):
    m = json.loads(store[1].read_text())
    m["study"] = "cost $5"
    m["rows"] = [f"{r} $10^{{-3$" for r in m["rows"]]
    for c in m["cells"]:
        c["row"] = f"{c['row']} $10^{{-3$"
    path = tmp_path / "studies" / "x.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(m))
    s = load_study_data(path, store[0])
    figs = write_figures(s, tmp_path / "figs")  # renders: mathtext would raise
    assert {f.kind for f in figs} == set(BUILDERS)
    assert r"cost \$5" in _title(accuracy_figure(s))


def test_write_figures_keeps_files_and_titles(study, tmp_path):
    figs = write_figures(study, tmp_path)
    assert [f.png.name for f in figs] == [f"{f.kind}.png" for f in figs]
    assert all(f.svg.is_file() and f.title for f in figs)
