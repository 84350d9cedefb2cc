"""Reports of studies: paper-layout tables (terminal, Markdown, LaTeX, CSV), figures, one
self-contained HTML page, and the paper's own numbers beside ours (``against="paper"``).

Library entry points::

    write_report("runs", "html", "runs/report.html")      # every study in the store
    write_report("runs/studies/lr-effect-cpu.json", "md", "lr.md", against="paper")
    study_summary("runs/studies/lr-effect-cpu.json")      # a rich Table for the terminal
    write_html_report("runs", "runs/studies/lr-effect-cpu.json")  # -> runs/report.html

Names are imported lazily, so importing ``prunebench.report.terminal`` (every CLI start)
does not load matplotlib.
"""

from __future__ import annotations

from prunebench.lazy import lazy_exports

_LAZY = {
    "FORMATS": "prunebench.report.api",
    "load_studies": "prunebench.report.api",
    "render": "prunebench.report.api",
    "study_summary": "prunebench.report.api",
    "write_html_report": "prunebench.report.api",
    "write_report": "prunebench.report.api",
    "ReportError": "prunebench.report.data",
    "StudyData": "prunebench.report.data",
    "load_study_data": "prunebench.report.data",
}

__all__ = sorted(_LAZY)
__getattr__ = lazy_exports(__name__, _LAZY)
