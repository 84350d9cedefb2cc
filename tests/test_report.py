"""The report layer: tables (every format), figures, HTML, --against paper, CLI, browser.

One tiny study (tests/fixtures/tiny_study.yaml: 3 rows x 2 ratios x 2 seeds on synthetic
data, a few seconds) is run once per session; every test reports from its run store.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import statistics
import struct
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prunebench.cli import app
from prunebench.compare.fingerprint import fingerprint
from prunebench.compare.setups import group_satisfied, satisfied_setups, setup_label
from prunebench.report import (
    ReportError,
    load_studies,
    render,
    study_summary,
    write_html_report,
    write_report,
)
from prunebench.report.data import data_label, load_study_data
from prunebench.report.figures import write_figures
from prunebench.report.paper import paper_tables
from prunebench.report.tables import accuracy_table, setup_table, ta_table
from prunebench.store import RunStore

FIXTURE = Path(__file__).parent / "fixtures" / "tiny_study.yaml"
ROWS = ["L1, step, LR 0.01", "L1, step, LR 0.001", "Scratch (step)"]
COLS = ["PR 0.3", "PR 0.5"]
EVIL = "<script>document.title='pwned'</script> L1 & co"
CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)

runner = CliRunner()


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from prunebench.studies import run_study

    out = tmp_path_factory.mktemp("report_store")
    manifest = run_study(FIXTURE, out, preset="cpu")
    assert manifest["complete"]
    return out, out / "studies" / "tiny-study-cpu.json"


def _variant_copy(store: tuple[Path, Path], tmp: Path, study: str | None = None,
                  renames: dict[str, str] | None = None, setup: str | None = None) -> Path:
    """A copy of the fixture manifest (study renamed, row labels renamed, declared setup
    changed) in tmp/studies/."""
    m = json.loads(store[1].read_text())
    renames = renames or {}
    if study:
        m["study"] = study
    if setup:
        m["setup"] = setup
    m["rows"] = [renames.get(r, r) for r in m["rows"]]
    for c in m["cells"]:
        c["row"] = renames.get(c["row"], c["row"])
    path = tmp / "studies" / f"{m['study']}-{m['preset']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(m))
    return path


def _hand(store: tuple[Path, Path]) -> dict[tuple[str, str], list[float]]:
    """Final-epoch test accuracies per (row, column), read straight from result.json."""
    out_dir, manifest = store
    acc: dict[tuple[str, str], list[float]] = {}
    for c in json.loads(manifest.read_text())["cells"]:
        res = json.loads((out_dir / c["run"] / "result.json").read_text())
        acc.setdefault((c["row"], c["column"]), []).append(res["test_acc"])
    return acc


def _text(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


# -- tables ---------------------------------------------------------------------------------

def test_accuracy_table_is_mean_std_of_final_epoch(store):
    t = accuracy_table(load_study_data(store[1]))
    hand = _hand(store)
    assert t.columns == COLS
    assert [r.label for r in t.rows] == [*ROWS, "param sparsity / speedup"]
    for row in t.rows[:-1]:
        for col, cell in zip(COLS, row.cells, strict=True):
            vals = hand[(row.label, col)]
            assert len(vals) == 2
            assert cell.mean == pytest.approx(statistics.mean(vals))
            assert cell.std == pytest.approx(statistics.stdev(vals))  # ddof=1
            assert cell.text == _text(vals)
    sp = t.rows[-1]
    assert sp.info and all("%" in c.text and "x" in c.text for c in sp.cells)
    assert "S3.1" in t.caption and "synthetic (generated)" in t.caption
    assert "final-epoch" in t.caption


def test_final_epoch_not_best_epoch(store):
    """The cell is result.json's test_acc (final epoch), the last retrain metrics line."""
    s = load_study_data(store[1])
    for r in s.all_runs:
        assert r.test_acc == r.curve("test_acc")[-1][1]


def test_ta_table(store):
    t = ta_table(load_study_data(store[1]))
    assert t is not None
    assert t.columns == [*COLS, "N", "retrain LR"]
    assert [r.label for r in t.rows] == ROWS


def test_markdown(store):
    md = render(load_studies(store[0]), "md")
    hand = _hand(store)
    for label in [*ROWS, *COLS, "synthetic (generated)", "S3.1", "param sparsity / speedup"]:
        assert label in md
    cell = _text(hand[("L1, step, LR 0.01", "PR 0.3")])
    assert (f"| L1, step, LR 0.01 | {cell} |" in md
            or f"| L1, step, LR 0.01 | **{cell}** |" in md)  # bold: best of its column
    assert "prunebench study tiny-study --preset cpu" in md


def test_latex_booktabs(store):
    tex = render(load_studies(store[0]), "latex")
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{lrr}"):
        assert rule in tex
    vals = _hand(store)[("Scratch (step)", "PR 0.5")]
    assert _text(vals).replace(" ± ", r" $\pm$ ") in tex
    assert "±" not in tex and r"num\_classes" in tex  # everything escaped


def test_csv_parses(store):
    text = render(load_studies(store[0]), "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    hand = _hand(store)
    acc = {(r["variant"], r["column"]): r for r in rows if r["table"] == "accuracy"}
    for key, vals in hand.items():
        assert float(acc[key]["mean"]) == pytest.approx(statistics.mean(vals), abs=1e-5)
        assert float(acc[key]["std"]) == pytest.approx(statistics.stdev(vals), abs=1e-5)
        assert acc[key]["n"] == "2"
    assert {r["table"] for r in rows} >= {"accuracy", "dense_diff", "ta"}


def test_terminal_and_summary(store):
    text = render(load_studies(store[0]), "terminal")
    for label in [*ROWS, *COLS]:
        assert label in text
    table = study_summary(store[1])
    assert table.row_count == len(ROWS) + 1
    assert [c.header.plain for c in table.columns] == ["variant", *COLS]


def test_data_label():
    assert data_label("CIFAR-10 (JPEG q75 copy, ImageFolder at /x/y.zip)") == \
        "CIFAR-10 (JPEG q75 copy)"
    assert data_label("Fashion-MNIST (IDX, /usr/share/x)") == "Fashion-MNIST (IDX)"
    assert data_label("synthetic (generated: n_train=5)") == "synthetic (generated)"


# -- figures and HTML -----------------------------------------------------------------------

def test_figures_png_and_svg(store, tmp_path):
    figs = write_figures(load_study_data(store[1]), tmp_path)
    assert {f.kind for f in figs} == {"accuracy", "ta", "jsv", "ratio", "lr"}
    for f in figs:
        assert f.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "<svg" in f.svg.read_text()


def test_html_self_contained_and_escaped(store, tmp_path):
    evil = _variant_copy(store, tmp_path, renames={"L1, step, LR 0.01": EVIL})
    path = write_report(evil, "html", tmp_path / "report.html", store=store[0])
    page = path.read_text()
    assert "http://" not in page and "https://" not in page
    assert "<script>document.title" not in page
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt; L1 &amp; co" in page
    assert page.count("<script>") == 1  # only the report's own sorting script
    assert page.count('src="data:image/png;base64,') == 5
    # rows of sizes/speedups stay out of sorting (class info); no class leaks onto a row
    assert '<tr class="info">' in page and "<trbest" not in page and "<trbad" not in page
    # the headline table comes first, then the card, then the other tables
    assert "Benchmark card" in page and page.index("<table") < page.index("Benchmark card")
    first = json.loads(store[1].read_text())["cells"][0]["run"]
    result = json.loads((store[0] / first / "result.json").read_text())
    assert "synthetic (generated)" in page and result["data"]["checksum"] in page
    assert result["torch"] in page and "prunebench study tiny-study --preset cpu" in page
    for f in ("accuracy", "ta", "jsv", "ratio", "lr"):
        assert (tmp_path / "figures" / "tiny-study-cpu" / f"{f}.svg").is_file()


def test_write_html_report(store, tmp_path):
    out = tmp_path / "store"
    shutil.copytree(store[0], out, symlinks=True,
                    ignore=shutil.ignore_patterns("checkpoints", "stages"))
    path = write_html_report(out, out / "studies" / "tiny-study-cpu.json")
    assert path == out / "report.html" and path.is_file()
    assert (out / "figures" / "tiny-study-cpu" / "accuracy.png").is_file()


# -- against the paper ----------------------------------------------------------------------

def test_paper_tables_load():
    ids = {t.id: t for t in paper_tables()}
    assert set(ids) == {"table5", "table6", "table7", "mystery2"}
    assert ids["table6"].value("L1, step, LR 0.01", "PR 0.3") == (93.79, 0.06)
    assert ids["table7"].value("Scratch (cosine)", "PR 0.9") == (65.92, 0.10)
    assert ids["mystery2"].value("P90F30 LR 1e-4 (S4.2)", "PR 0.95") == (29.89, None)
    assert ids["table5"].ta_value("P60F60 LR 0.001", "PR 0.95") == 68.19


def test_against_paper(store, tmp_path):
    named = _variant_copy(store, tmp_path, study="lr-effect",
                          renames={"L1, step, LR 0.001": "Mystery row"})
    studies = load_studies(named, store=store[0])
    md = render(studies, "md", against="paper")
    hand = _hand(store)
    assert "Table 6: ResNet-56 on CIFAR-10" in md
    assert "the paper's setting differs" in md
    ours = statistics.mean(hand[("L1, step, LR 0.01", "PR 0.3")])
    line = next(ln for ln in md.splitlines()
                if ln.startswith("| L1, step, LR 0.01 | PR 0.3 |"))
    assert "93.79 ± 0.06" in line and f"{ours - 93.79:+.2f}" in line
    assert f"{93.79 - 93.78:+.2f}" in line  # the paper's difference to its dense model
    mystery = [ln for ln in md.splitlines() if ln.startswith("| Mystery row | PR")]
    assert len(mystery) == 2 and all("no counterpart" in ln for ln in mystery)
    assert any("| *L1, cosine, LR 0.01* | PR 0.9 | not run | 86.90 ± 0.20 |" in ln
               for ln in md.splitlines())
    rows = list(csv.DictReader(io.StringIO(render(studies, "csv", against="paper"))))
    assert any(r["table"] == "against" and r["column"] == "paper" for r in rows)


def test_against_paper_without_table(store):
    md = render(load_studies(store[0]), "md", against="paper")
    assert "The paper has no table for: tiny-study-cpu." in md


# -- CLI ------------------------------------------------------------------------------------

def test_cli_formats(store, tmp_path):
    res = runner.invoke(app, ["report", str(store[0]), "--format", "csv"])
    assert res.exit_code == 0, res.output
    assert "tiny-study" in res.output
    res = runner.invoke(app, ["report", str(store[1])])
    assert res.exit_code == 0 and "Scratch (step)" in res.output
    out = tmp_path / "r.html"
    res = runner.invoke(app, ["report", str(store[0]), "-f", "html", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert out.is_file()
    res = runner.invoke(app, ["report", str(store[0]), "-f", "latex", "-o", str(tmp_path / "t.tex"),
                              "--study", "tiny-study"])
    assert res.exit_code == 0 and r"\toprule" in (tmp_path / "t.tex").read_text()


@pytest.mark.parametrize("args, message", [
    (["--format", "pdf"], "unknown report format 'pdf'"),
    (["--against", "nature"], "unknown --against 'nature'"),
    (["--study", "nosuch"], "no study 'nosuch'"),
])
def test_cli_errors_exit_2(store, args, message):
    res = runner.invoke(app, ["report", str(store[0]), *args])
    assert res.exit_code == 2
    assert message in res.output.replace("\n", "")


def test_cli_missing_dir_exit_2(tmp_path):
    res = runner.invoke(app, ["report", str(tmp_path / "nope")])
    assert res.exit_code == 2
    # a folder without study manifests is reported as plain runs: here there are none
    with pytest.raises(ReportError, match="no finished runs"):
        load_studies(tmp_path)


# -- browser --------------------------------------------------------------------------------

_PROBE = """<script>
(function(){var d=document.documentElement;
 function note(m){d.setAttribute('data-errors',(d.getAttribute('data-errors')||'')+'|'+m);}
 window.addEventListener('error',function(e){note(e.message||'error');});
 var ce=console.error;console.error=function(){note([].join.call(arguments,' '));
  return ce.apply(console,arguments);};
 window.addEventListener('load',function(){
  var th=document.querySelector('table.sortable thead th:nth-child(2)');th.click();
  var first=th.closest('table').tBodies[0].rows[0].cells[1].getAttribute('data-sort');
  var all=[].map.call(th.closest('table').tBodies[0].rows,function(r){
   return r.classList.contains('info')?null:parseFloat(r.cells[1].getAttribute('data-sort'));})
   .filter(function(v){return v!==null;});
  d.setAttribute('data-sorted',JSON.stringify(all));d.setAttribute('data-first',first);});
})();
</script>"""


def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp / 'chromium-profile'}",
           "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_html_in_headless_chromium(store, tmp_path):
    evil = _variant_copy(store, tmp_path, renames={"L1, step, LR 0.01": EVIL})
    page = write_report(evil, "html", tmp_path / "report.html", store=store[0])

    # 1. screenshot of the page as shipped; the console log goes to stderr
    shot = tmp_path / "shot.png"
    res = _chromium([f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri()], tmp_path)
    assert shot.is_file(), res.stderr[-2000:]
    head = shot.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", head[16:24]) == (1280, 2000)
    bad = [ln for ln in res.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not bad, bad

    # 2. the DOM after load of an instrumented copy: errors caught, script ran, sorting works
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("<head>", "<head>" + _PROBE, 1))
    res = _chromium(["--dump-dom", "--virtual-time-budget=3000", probe.as_uri()], tmp_path)
    dom = res.stdout
    start = dom.find("<html")
    tag = dom[start:dom.index(">", start) + 1] if start >= 0 else ""
    assert 'data-report-ready="1"' in tag, res.stderr[-2000:]
    assert "data-errors" not in tag, tag
    assert "<title>prunebench report" in dom and "pwned</title>" not in dom
    sorted_vals = json.loads(tag.split('data-sorted="')[1].split('"')[0].replace("&quot;", '"'))
    assert sorted_vals == sorted(sorted_vals) and len(sorted_vals) == len(ROWS)


def test_incomplete_study_reports_what_exists(store, tmp_path):
    m = json.loads(store[1].read_text())
    m["complete"] = False
    gone = next(c for c in m["cells"] if c["row"] == "Scratch (step)" and c["column"] == "PR 0.5")
    gone["run"] = "000000000000"  # a cell whose run never finished
    path = tmp_path / "studies" / "tiny-study-cpu.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(m))
    t = accuracy_table(load_study_data(path, store[0]))
    cell = t.rows[ROWS.index("Scratch (step)")].cells[1]
    assert cell.n == 1 and cell.text.endswith("(n=1)")
    assert "1 cell run(s) missing" in t.caption


# -- setups: computed from the runs, the declaration beside them ---------------------------

def _hand_setups(store: tuple[Path, Path]) -> tuple[dict[str, list[str]],
                                                    dict[tuple[str, str], list[str]]]:
    """Per column the setups every row meets (each seed's group, intersected over seeds) and
    per (row, column) those shared with the first row, straight from the store."""
    m = json.loads(store[1].read_text())
    rs = RunStore(store[0])
    fps = {(c["row"], c["column"], c["seed"]): fingerprint(rs.load(c["run"]))
           for c in m["cells"]}
    seeds = sorted({k[2] for k in fps})
    cols: dict[str, list[str]] = {}
    rows: dict[tuple[str, str], list[str]] = {}
    for col in COLS:
        sets = [set(group_satisfied([fps[(r, col, s)] for r in ROWS])) for s in seeds]
        cols[col] = sorted(set.intersection(*sets))
        for r in ROWS[1:]:
            rows[(r, col)] = sorted(set.intersection(*[set(satisfied_setups(
                fps[(ROWS[0], col, s)], fps[(r, col, s)])) for s in seeds]))
    return cols, rows


def test_declared_setup_not_met_is_flagged(store, tmp_path):
    """The study declares S4.2, but two rows differ in the retraining LR: every output
    shows the setup the runs share (computed) with "declared S4.2: not met" beside it."""
    path = _variant_copy(store, tmp_path, setup="S4.2")
    s = load_study_data(path, store[0])
    hand_cols, hand_rows = _hand_setups(store)
    for col, check in s.column_setups().items():
        assert sorted(check.computed) == hand_cols[col]  # seed-matched, intersected
        assert "S4.2" not in check.computed and check.met is False and check.flagged
        assert check.text == f"computed {setup_label(check.computed)} (declared S4.2: not met)"
        assert check.seeds == [0, 1] and not check.skipped
    for (row, col), check in s.row_setups().items():
        if row == ROWS[0]:
            assert check.reference and check.text == "reference"
        else:
            assert sorted(check.computed) == hand_rows[(row, col)]
    flag = "(declared S4.2: not met)"
    assert flag in s.setup_summary() and s.setup_flagged
    assert flag in accuracy_table(s).caption
    t = setup_table(s)
    assert t.rows[-1].label == "all rows" and all(flag in c.text for c in t.rows[-1].cells)
    studies = [s]
    assert flag in render(studies, "md") and "S4.2: not met" in render(studies, "terminal")
    assert flag in render(studies, "latex")
    rows = list(csv.DictReader(io.StringIO(render(studies, "csv"))))
    assert any(r["table"] == "setups" and r["variant"] == "all rows" and flag in r["text"]
               for r in rows)
    page = write_report(path, "html", tmp_path / "report.html", store=store[0]).read_text()
    assert "badge bad" in page and 'class="bad"' in page and "declared S4.2: not met" in page


def test_met_setup_is_shown_as_computed(store, tmp_path):
    """A declaration the runs meet (S2: the rows share data, network, rate, base model) is
    shown as computed, "met", and not flagged."""
    s = load_study_data(_variant_copy(store, tmp_path, setup="S2"), store[0])
    for check in s.column_setups().values():
        assert "S2" in check.computed and check.met is True and not check.flagged
        assert check.text.startswith("computed ") and check.text.endswith("(declared S2: met)")
    assert "not met" not in s.setup_summary() and "(declared S2: met)" in s.setup_summary()
    md = render([s], "md")
    assert "(declared S2: met)" in md and "not met" not in md


def test_row_label_claims_are_checked(store, tmp_path):
    """A row label's "(S4.2)" is a claim: checked against the first row of its column."""
    path = _variant_copy(store, tmp_path, setup="S1", renames={
        "L1, step, LR 0.001": "L1, step, LR 0.001 (S4.2)",  # differs in the LR: not met
        "Scratch (step)": "Scratch (step) (S1)"})  # same data, network, rate: met
    s = load_study_data(path, store[0])
    checks = s.row_setups()
    for col in COLS:
        bad = checks[("L1, step, LR 0.001 (S4.2)", col)]
        assert bad.declared == "S4.2" and bad.met is False
        assert bad.text.endswith("(label claims S4.2: not met)")
        good = checks[("Scratch (step) (S1)", col)]
        assert good.met is True and good.text.endswith("(label claims S1: met)")
    assert s.setup_flagged  # the study's own S1 holds, a row's claim does not
    assert "label claims S4.2: not met" in render([s], "md")


def test_missing_run_is_skipped_and_said_so(store, tmp_path):
    m = json.loads(store[1].read_text())
    gone = next(c for c in m["cells"] if c["row"] == "Scratch (step)" and c["column"] == "PR 0.5"
                and c["seed"] == 1)
    gone["run"] = "000000000000"
    path = tmp_path / "studies" / "tiny-study-cpu.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(m))
    s = load_study_data(path, store[0])
    col = s.column_setups()["PR 0.5"]
    assert col.computed is not None and col.seeds == [0, 1]  # seed 1: the other two rows
    assert col.skipped == ["Scratch (step) seed 1 (run 000000000000 missing)"]
    assert "skipped 1: Scratch (step) seed 1 (run 000000000000 missing)" in col.text
    row = s.row_setups()[("Scratch (step)", "PR 0.5")]
    assert row.seeds == [0] and row.skipped
    assert not s.column_setups()["PR 0.3"].skipped
    assert "run 000000000000 missing" in render([s], "md")


# -- the card: one builder for `prunebench card` and the HTML report ------------------------

def test_study_card_is_the_report_card(store, tmp_path):
    from prunebench.compare.card import card_fields, render_markdown, study_card, write_card
    from prunebench.report.html import default_card

    s = load_study_data(_variant_copy(store, tmp_path, setup="S4.2"), store[0])
    card = study_card(s)
    assert default_card(s) == card_fields(card)  # the HTML shows the builder's content
    fields = dict(card_fields(card))
    assert fields["comparison setup"] == s.setup_summary()
    assert "(declared S4.2: not met)" in fields["comparison setup"]
    assert {e["id"] for e in card["runs"]} == {c.run_id for c in s.cells}
    st = card["study"]
    assert [c["column"] for c in st["columns"]] == COLS
    assert all(c["met"] is False and c["declared"] == "S4.2" for c in st["columns"])
    md = render_markdown(card)
    heading = md.splitlines()[0]
    assert heading == f"# prunebench card: {s.title} [{s.key}]"
    assert len(card["methods"]) == 6
    assert not any(m["method"] in heading for m in card["methods"])  # no label list
    assert "**not met**" in md and "Setup achieved" in md
    # `prunebench card STUDY` writes the same card (declared as the store's manifest says)
    mdp, js = write_card(["tiny-study"], store[0], tmp_path / "card.md")
    data = json.loads(js.read_text())
    assert data["title"] == f"{s.title} [{s.key}]" and data["study"]["declared_setup"] == "S3.1"
    assert mdp.read_text().splitlines()[0] == heading
    first = next(e for e in data["runs"])
    result = json.loads((store[0] / first["id"] / "result.json").read_text())
    assert first["final_test_acc"] == result["test_acc"]
    assert first["base_model"]["dense_test_acc"] == result["dense"]["test_acc"]
