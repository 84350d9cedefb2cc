"""Reports of studies: paper-layout tables (terminal, Markdown, LaTeX, CSV), figures, one
self-contained HTML page, and the paper's own numbers beside ours (``against="paper"``).

Library entry points::

    write_report("runs", "html", "runs/report.html")      # every study in the store
    write_report("runs/studies/lr-effect-cpu.json", "md", "lr.md", against="paper")
    study_summary("runs/studies/lr-effect-cpu.json")      # a rich Table for the terminal
    write_html_report("runs", "runs/studies/lr-effect-cpu.json")  # -> runs/report.html
"""

from __future__ import annotations

from prunebench.report.api import (
    FORMATS,
    load_studies,
    render,
    study_summary,
    write_html_report,
    write_report,
)
from prunebench.report.data import ReportError, StudyData, load_study_data

__all__ = [
    "FORMATS",
    "ReportError",
    "StudyData",
    "load_studies",
    "load_study_data",
    "render",
    "study_summary",
    "write_html_report",
    "write_report",
]
