"""What a study found: per declared finding of the paper, whether it held here.

A study YAML declares its findings (``findings:`` in :class:`prunebench.studies.spec.
StudySpec`): ``{claim, better, worse, columns}`` means row ``better`` beats row ``worse``
(final-epoch test accuracy) in each listed column. Each comparison is tested with Welch's
t-test (:func:`prunebench.compare.stats.welch`) where both rows have >= 2 seeds, else it
says "single seed: not tested". A finding *held* when ``better`` has the higher mean in
every comparison (significant or not is said beside it), *did not hold* when it never
does, and is *mixed* otherwise. The declarations are read from the manifest
(``findings``) when it has them, else from the built-in study of that name; a crossval
study's own verdict (manifest ``analysis``) is reported as its finding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prunebench.compare.stats import ALPHA, welch
from prunebench.report.data import StudyData


@dataclass
class Comparison:
    better: str
    worse: str
    column: str
    n_better: int
    n_worse: int
    diff: float | None  # mean(better) - mean(worse); None: a side has no runs
    p: float | None

    @property
    def tested(self) -> bool:
        return self.p is not None

    @property
    def held(self) -> bool | None:
        return None if self.diff is None else self.diff > 0

    @property
    def significant(self) -> bool | None:
        return None if self.p is None else self.p < ALPHA

    @property
    def seeds(self) -> str:
        return (f"{self.n_better}" if self.n_better == self.n_worse
                else f"{self.n_better} vs {self.n_worse}")

    @property
    def test_text(self) -> str:
        if self.diff is None:
            return "no runs"
        if self.p is None:
            return "single seed: not tested"
        return f"Welch p={self.p:.2g} ({'significant' if self.significant else 'not significant'})"

    @property
    def verdict(self) -> str:
        if self.diff is None:
            return "no data"
        word = "held" if self.held else "not held"
        if self.p is None:
            return f"{word} (single seed: not tested)"
        return f"{word} ({'significant' if self.significant else 'not significant'})"

    def to_dict(self) -> dict[str, Any]:
        return {"better": self.better, "worse": self.worse, "column": self.column,
                "n_better": self.n_better, "n_worse": self.n_worse, "diff": self.diff,
                "p": self.p, "held": self.held, "significant": self.significant,
                "verdict": self.verdict}


@dataclass
class FindingResult:
    claim: str
    comparisons: list[Comparison] = field(default_factory=list)
    note: str | None = None  # a verdict given as text (crossval), or why nothing was compared

    @property
    def status(self) -> str:
        """``held``, ``not held``, ``mixed`` or ``no data``."""
        done = [c for c in self.comparisons if c.held is not None]
        if not done:
            return "no data"
        if all(c.held for c in done):
            return "held"
        if not any(c.held for c in done):
            return "not held"
        return "mixed"

    @property
    def single_seed(self) -> bool:
        return any(c.diff is not None and not c.tested for c in self.comparisons)

    @property
    def summary(self) -> str:
        """One line: ``"held in 2 of 2 comparisons (2 seeds; significant in 1)"``."""
        if self.note is not None and not self.comparisons:
            return self.note
        done = [c for c in self.comparisons if c.held is not None]
        if not done:
            return "no data: the rows it names have no finished runs here"
        held = sum(bool(c.held) for c in done)
        seeds = sorted({min(c.n_better, c.n_worse) for c in done})
        seed_text = ("single seed: not tested" if seeds == [1] else
                     f"{'/'.join(map(str, seeds))} seeds")
        tested = [c for c in done if c.tested]
        sig = ""
        if tested:
            n_sig = sum(bool(c.significant and c.held) for c in tested)
            sig = f"; significant in {n_sig} of {len(tested)} tested"
        return (f"{self.status}: better in {held} of {len(done)} comparison(s) "
                f"({seed_text}{sig})")

    def to_dict(self) -> dict[str, Any]:
        return {"claim": self.claim, "status": self.status, "summary": self.summary,
                "note": self.note, "comparisons": [c.to_dict() for c in self.comparisons]}


def declared_findings(study: StudyData) -> list[dict[str, Any]]:
    """The study's finding declarations: the manifest's ``findings`` or the built-in
    study's (``[]`` when there are none)."""
    raw = study.manifest.get("findings")
    if isinstance(raw, list):
        return [f for f in raw if isinstance(f, dict)]
    try:
        from prunebench.studies.spec import STUDIES, load_study

        if study.name in STUDIES:
            return [f.model_dump() for f in load_study(study.name).findings_for(study.preset)]
    except Exception:  # noqa: BLE001 - a broken built-in must not break a report
        return []
    return []


def _accs(study: StudyData, row: str, column: str) -> list[float]:
    return [r.test_acc for r in study.runs(row, column) if r.test_acc is not None]


def evaluate(study: StudyData, declared: list[dict[str, Any]] | None = None
             ) -> list[FindingResult]:
    """Every declared finding of the study, tested on its runs."""
    from prunebench.studies.spec import match_rows

    declared = declared_findings(study) if declared is None else declared
    out = []
    for f in declared:
        res = FindingResult(str(f.get("claim", "")))
        better = match_rows(str(f.get("better", "")), study.rows)
        worse = match_rows(str(f.get("worse", "")), study.rows)
        cols = f.get("columns", "all")
        columns = study.columns if cols in (None, "all") else [
            c for c in study.columns if c in set(cols)]
        for col in columns:
            for b in better:
                for w in worse:
                    if b == w:
                        continue
                    a, z = _accs(study, b, col), _accs(study, w, col)
                    if not a or not z:
                        res.comparisons.append(Comparison(b, w, col, len(a), len(z), None,
                                                          None))
                        continue
                    t = welch(a, z)
                    res.comparisons.append(Comparison(b, w, col, len(a), len(z), t.diff, t.p))
        if not res.comparisons:
            res.note = "not applicable to this preset (its rows or columns are not here)"
        out.append(res)
    analysis = study.manifest.get("analysis")
    if isinstance(analysis, dict) and analysis.get("verdict"):
        out.append(FindingResult("Recipe cross-validation: one method wins under both "
                                 "retraining recipes", note=str(analysis["verdict"])))
    return out
