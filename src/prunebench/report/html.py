"""One self-contained HTML report: benchmark card, sortable tables, embedded figures.

Nothing on the page refers to the network: figures are PNG ``data:`` URIs, the style and
the sorting script are inline. Every piece of run text (labels, notes, commands, sources)
goes through :func:`html.escape`.

The card on top is made by a ``card`` function (``StudyData -> [(field, value)]``); the
default, :func:`default_card`, is a compact view of the one card builder's content
(:func:`prunebench.compare.card.study_card`, the card ``prunebench card STUDY`` writes).
The comparison setup shown is computed from the runs (:meth:`StudyData.setup_summary`),
with the study's declared setup beside it and flagged where it is not met.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prunebench.compare.card import card_fields, study_card
from prunebench.report.data import StudyData
from prunebench.report.tables import ReportTable, study_tables

if TYPE_CHECKING:  # matplotlib loads only when a page with figures is written
    from prunebench.report.figures import FigureFile

CardFn = Callable[[StudyData], list[tuple[str, str]]]

_NUM = re.compile(r"^[+\-−]?\d+(\.\d+)?")


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def default_card(study: StudyData) -> list[tuple[str, str]]:
    """The study's benchmark card, compact: :func:`prunebench.compare.card.card_fields` of
    the card :func:`prunebench.compare.card.study_card` builds for the study's runs (the
    same content ``prunebench card STUDY`` writes in full)."""
    return card_fields(study_card(study))


def _card_html(study: StudyData, card: CardFn) -> str:
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in card(study))
    return f'<section class="card"><h3>Benchmark card</h3><dl>{items}</dl></section>'


def _sort_key(text: str) -> str:
    m = _NUM.match(text.strip())
    return m.group(0).replace("−", "-") if m else ""


def table_html(t: ReportTable) -> str:
    head = "".join(f'<th scope="col">{_e(c)}</th>' for c in [t.first, *t.columns])
    body = []
    for row in t.rows:
        row_cls = ' class="info"' if row.info else ""
        cells = [f'<th scope="row">{_e(row.label)}</th>']
        for c in row.cells:
            key = "" if c.mean is None else repr(c.mean)
            key = key or _sort_key(c.text)
            bad = ("not met" in c.text or c.text.startswith(("not held", "not comparable"))
                   or (c.mean is None and c.text.startswith(("diverged", "failed"))))
            cell_cls = " ".join(k for k, on in (("bad", bad), ("best", c.best)) if on)
            attr = f' class="{cell_cls}"' if cell_cls else ""
            text = f"<b>{_e(c.text)}</b>" if c.best else _e(c.text)
            cells.append(f'<td data-sort="{_e(key)}"{attr}>{text}</td>')
        body.append(f"<tr{row_cls}>{''.join(cells)}</tr>")
    warn = (f'<p class="warn"><span class="badge bad">⚠ {_e(t.warning)}</span></p>'
            if t.warning else "")
    return (f'<div class="tbl" id="{_e(t.study)}-{_e(t.preset)}-{_e(t.name)}">{warn}'
            f'<p class="cap"><b>{_e(t.title)}</b><br>{_e(t.caption)}</p>'
            f'<table class="sortable"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _figure_html(f: FigureFile) -> str:
    b64 = base64.b64encode(f.png.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{_e(f.title)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{_e(f.title)} (also {_e(f.svg.name)} next to this report)"
            "</figcaption></figure>")


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
 color:#1d232a;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:18px 26px 40px}
h1{font-size:22px;margin:6px 0 2px}h2{font-size:18px;margin:34px 0 6px;
 border-bottom:2px solid #d9dee5;padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
.meta{color:#5a6572;font-size:12px}.badge{display:inline-block;background:#fff3cd;
 border:1px solid #e6c65c;border-radius:4px;padding:1px 7px;font-weight:600}
.card{background:#fff;border:1px solid #d9dee5;border-radius:8px;padding:8px 16px;margin:10px 0}
.card dl{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;margin:6px 0}
.card dt{font-weight:600;color:#3c4650}.card dd{margin:0;word-break:break-word;
 font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12.5px}
table{border-collapse:collapse;background:#fff;margin:12px 0;font-size:13px}
.tbl{margin:16px 0 22px}.cap{margin:0;color:#3c4650;font-size:12.5px;max-width:1100px}
th,td{padding:4px 10px;border-bottom:1px solid #e3e7ec}td{text-align:right;
 font-variant-numeric:tabular-nums}thead th{border-bottom:2px solid #9aa5b1;cursor:pointer;
 user-select:none;white-space:nowrap}thead th:hover{background:#eef2f6}
tbody th{text-align:left;font-weight:500}tr.info th,tr.info td{color:#5a6572;
 font-style:italic;background:#fafbfc}
th.asc::after{content:" \\25B2";font-size:9px}th.desc::after{content:" \\25BC";font-size:9px}
figure{background:#fff;border:1px solid #d9dee5;border-radius:8px;margin:12px 0;padding:8px}
figure img{max-width:100%;height:auto;display:block}figcaption{color:#5a6572;font-size:12px}
.desc{max-width:900px}
.badge.bad{background:#fde2e1;border-color:#d9534f;color:#8a1c17}
td.bad{color:#8a1c17;background:#fdf0ef;font-weight:600}
td.best{background:#e7f5e9}.findings li{margin:3px 0}.held{color:#1e6b2e;font-weight:600}
.notheld{color:#8a1c17;font-weight:600}
"""

_JS = """
(function(){
 function key(td){var s=td.getAttribute('data-sort');
  if(s!==null&&s!==''){var n=parseFloat(s);if(!isNaN(n))return n;}
  return td.textContent.trim().toLowerCase();}
 function cmp(a,b){if(typeof a==='number'&&typeof b==='number')return a-b;
  if(typeof a==='number')return -1;if(typeof b==='number')return 1;
  return a<b?-1:(a>b?1:0);}
 var tables=document.querySelectorAll('table.sortable');
 for(var t=0;t<tables.length;t++){(function(table){
  var ths=table.tHead.rows[0].cells;
  for(var i=0;i<ths.length;i++){(function(col,th){
   th.addEventListener('click',function(){
    var asc=!th.classList.contains('asc');
    for(var j=0;j<ths.length;j++){ths[j].classList.remove('asc','desc');}
    th.classList.add(asc?'asc':'desc');
    var body=table.tBodies[0];var rows=Array.prototype.slice.call(body.rows);
    var main=rows.filter(function(r){return !r.classList.contains('info');});
    var info=rows.filter(function(r){return r.classList.contains('info');});
    main.sort(function(a,b){var d=cmp(key(a.cells[col]),key(b.cells[col]));
     return asc?d:-d;});
    main.concat(info).forEach(function(r){body.appendChild(r);});
   });})(i,ths[i]);}
 })(tables[t]);}
 document.documentElement.setAttribute('data-report-ready','1');
})();
"""


def _findings_html(study: StudyData) -> str:
    from prunebench.report.findings import evaluate

    results = evaluate(study)
    if not results:
        return ""
    items = []
    for f in results:
        cls = {"held": "held", "not held": "notheld",
               "not held (diverged)": "notheld"}.get(f.status, "")
        items.append(f"<li>{_e(f.claim)}: <span class='{cls}'>{_e(f.summary)}</span></li>")
    return ("<h3>What this study found</h3><ul class='findings'>" + "".join(items)
            + "</ul>")


def study_section(study: StudyData, figures: list[FigureFile],
                  extra_tables: Sequence[ReportTable] = (), card: CardFn = default_card) -> str:
    """The headline (accuracy) table and the findings first, then the card and the rest."""
    bad = " bad" if study.setup_flagged else ""
    tables = study_tables(study)
    head, rest = tables[:1], tables[1:]
    parts = [f'<section class="study" id="{_e(study.key)}">',
             f"<h2>{_e(study.title)} <span class='meta'>[{_e(study.key)}]</span></h2>",
             f"<p>Data: <span class='badge'>{_e(study.data_label)}</span> · comparison "
             f"setup <span class='badge{bad}'>{_e(study.setup_summary())}</span> (from "
             f"the runs)</p>"]
    if study.description:
        parts.append(f'<p class="desc">{_e(study.description)}</p>')
    parts += [table_html(t) for t in head]
    parts.append(_findings_html(study))
    parts.append(_card_html(study, card))
    parts.append("<h3>Tables</h3><p class='meta'>Click a column header to sort.</p>")
    parts += [table_html(t) for t in rest]
    for t in extra_tables:
        parts.append(table_html(t))
    if figures:
        parts.append("<h3>Figures</h3>")
        parts += [_figure_html(f) for f in figures]
    parts.append("</section>")
    return "\n".join(parts)


def html_page(studies: list[StudyData], figures: dict[str, list[FigureFile]],
              against: dict[str, list[ReportTable]] | None = None,
              card: CardFn = default_card, notes: Sequence[str] = ()) -> str:
    against = against or {}
    labels = sorted({s.data_label for s in studies})
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    toc = "".join(f'<li><a href="#{_e(s.key)}">{_e(s.title)}</a> [{_e(s.key)}]</li>'
                  for s in studies)
    body = "\n".join(study_section(s, figures.get(s.key, []), against.get(s.key, []), card)
                     for s in studies)
    note_html = "".join(f"<p class='meta'>{_e(n)}</p>" for n in notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>prunebench report: {_e(", ".join(s.key for s in studies))}</title>
<style>{_CSS}</style></head>
<body><main>
<h1>prunebench report</h1>
<p class="meta">Generated {_e(now)} · data used: {" ".join(
        f"<span class='badge'>{_e(lab)}</span>" for lab in labels)} · accuracies are
final-epoch top-1 test accuracy, never the best epoch.</p>
{note_html}
<ul>{toc}</ul>
{body}
</main>
<script>{_JS}</script>
</body></html>
"""


def build_html(studies: list[StudyData], path: str | Path, *,
               against: dict[str, list[ReportTable]] | None = None,
               card: CardFn = default_card, notes: Sequence[str] = ()) -> Path:
    """Write ``path`` (self-contained) and the figures (PNG + SVG) under ``figures/``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from prunebench.report.figures import write_figures

    figs = {s.key: write_figures(s, path.parent / "figures" / s.key) for s in studies}
    from prunebench import io

    io.write_text(path, html_page(studies, figs, against, card, notes))
    return path
