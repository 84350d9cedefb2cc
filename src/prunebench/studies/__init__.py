"""Studies: grids of recipes that share stages (a dense model is trained once per key).

The names below are imported on first use (PEP 562): readers of stored studies
(``report``, ``compare``) use :mod:`prunebench.studies.spec` without loading the runner,
the pipeline and torch behind it.
"""

from __future__ import annotations

from prunebench.lazy import lazy_exports

_LAZY = {
    "expand_grid": "prunebench.studies.grid",
    **dict.fromkeys(("expand_study", "manifest_path", "run_studies", "run_study"),
                    "prunebench.studies.runner"),
    **dict.fromkeys(("STUDIES", "StudySpec", "load_study"), "prunebench.studies.spec"),
}

__all__ = sorted(_LAZY)
__getattr__ = lazy_exports(__name__, _LAZY)
