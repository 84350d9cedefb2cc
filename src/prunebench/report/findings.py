"""What a study found: per declared finding of the paper, whether it held here.

A study YAML declares its findings (``findings:`` in :class:`prunebench.studies.spec.
StudySpec`): ``{claim, better, worse, columns}`` means row ``better`` beats row ``worse``
(final-epoch test accuracy) in each listed column. Each comparison is tested with Welch's
t-test (:func:`prunebench.compare.stats.welch`) where both rows have >= 2 seeds, else it
says "single seed: not tested". A comparison where either side has a run that diverged,
failed or is missing (or no finished run) is *not comparable*: it is listed and counted,
never dropped. A finding *held* when every comparison was made and ``better`` has the
higher mean in each (significant or not is said beside it); a comparison where
``better`` diverged counts against it ("not held (diverged)" when that is all there
is); one that is not comparable for another reason leaves the finding *incomplete*. It
*did not hold* when ``better`` never wins, and is *mixed* otherwise. The declarations are
read from the manifest (``findings``) when it has them, else from the built-in study of
that name; a crossval study's own verdict (manifest ``analysis``) is reported as its
finding.
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
    diff: float | None  # mean(better) - mean(worse); None: not comparable
    p: float | None
    #: why the comparison was not made, per side: ``{"better": [...], "worse": [...]}``
    #: with texts such as ``"seed 0 diverged"``, ``"no finished run"``
    problems: dict[str, list[str]] = field(default_factory=dict)

    @property
    def comparable(self) -> bool:
        return self.diff is not None and not any(self.problems.values())

    @property
    def better_failed(self) -> bool:
        """Whether ``better`` has a run that diverged or failed here (counts against the
        finding: the method did not get there)."""
        return any(("diverged" in t or "failed" in t) for t in self.problems.get("better", []))

    @property
    def why(self) -> str:
        """Why the comparison was not made, e.g. ``"A: seed 0 diverged"``."""
        parts = []
        for side, row in (("better", self.better), ("worse", self.worse)):
            texts = self.problems.get(side) or []
            if texts:
                parts.append(f"{row}: {', '.join(texts)}")
        return "; ".join(parts) or "no finished runs"

    @property
    def tested(self) -> bool:
        return self.p is not None

    @property
    def held(self) -> bool | None:
        return None if not self.comparable else bool(self.diff is not None and self.diff > 0)

    @property
    def significant(self) -> bool | None:
        return None if self.p is None else self.p < ALPHA

    @property
    def seeds(self) -> str:
        return (f"{self.n_better}" if self.n_better == self.n_worse
                else f"{self.n_better} vs {self.n_worse}")

    @property
    def test_text(self) -> str:
        if not self.comparable:
            return "not tested (not comparable)"
        if self.p is None:
            return "single seed: not tested"
        return f"Welch p={self.p:.2g} ({'significant' if self.significant else 'not significant'})"

    @property
    def verdict(self) -> str:
        if not self.comparable:
            if self.better_failed:
                return f"not held (diverged): {self.why}"
            return f"not comparable: {self.why}"
        word = "held" if self.held else "not held"
        if self.p is None:
            return f"{word} (single seed: not tested)"
        return f"{word} ({'significant' if self.significant else 'not significant'})"

    def to_dict(self) -> dict[str, Any]:
        return {"better": self.better, "worse": self.worse, "column": self.column,
                "n_better": self.n_better, "n_worse": self.n_worse, "diff": self.diff,
                "p": self.p, "held": self.held, "significant": self.significant,
                "comparable": self.comparable, "problems": self.problems,
                "verdict": self.verdict}


@dataclass
class FindingResult:
    claim: str
    comparisons: list[Comparison] = field(default_factory=list)
    note: str | None = None  # a verdict given as text (crossval), or why nothing was compared

    @property
    def status(self) -> str:
        """``held`` (every comparison made and held), ``not held``, ``not held
        (diverged)`` (``better`` diverged or failed wherever it was not beaten),
        ``mixed``, ``incomplete`` (held wherever comparable, but some comparisons could
        not be made), ``not comparable`` (none could be made) or ``no data`` (no finished
        runs)."""
        if not self.comparisons:
            return "no data"
        held = [c for c in self.comparisons if c.held]
        lost = [c for c in self.comparisons if c.held is False]
        failed = [c for c in self.comparisons if c.held is None and c.better_failed]
        open_ = [c for c in self.comparisons if c.held is None and not c.better_failed]
        if len(held) == len(self.comparisons):
            return "held"
        if held:
            return "mixed" if lost or failed else "incomplete"
        if failed and not lost:
            return "not held (diverged)"
        if lost or failed:
            return "not held"
        # nothing decided: runs that are there but cannot be compared, or none at all
        return "not comparable" if any(c.n_better or c.n_worse for c in open_) else "no data"

    @property
    def single_seed(self) -> bool:
        return any(c.comparable and not c.tested for c in self.comparisons)

    @property
    def summary(self) -> str:
        """One line: ``"held: better in 2 of 2 comparison(s) (2 seeds; significant in 1
        of 2 tested)"``; comparisons that could not be made are counted and named
        (``"mixed: better in 1 of 2 comparison(s); 1 not comparable: A: seed 0 diverged
        (lr huge)"``)."""
        if self.note is not None and not self.comparisons:
            return self.note
        done = [c for c in self.comparisons if c.comparable]
        bad = [c for c in self.comparisons if not c.comparable]
        if not done and not any(c.better_failed for c in bad) and all(
                not c.n_better and not c.n_worse for c in bad):
            return "no data: the rows it names have no finished runs here"
        held = sum(bool(c.held) for c in done)
        text = f"{self.status}: better in {held} of {len(self.comparisons)} comparison(s)"
        if done:
            seeds = sorted({min(c.n_better, c.n_worse) for c in done})
            seed_text = ("single seed: not tested" if seeds == [1] else
                         f"{'/'.join(map(str, seeds))} seeds")
            tested = [c for c in done if c.tested]
            sig = ""
            if tested:
                n_sig = sum(bool(c.significant and c.held) for c in tested)
                sig = f"; significant in {n_sig} of {len(tested)} tested"
            text += f" ({seed_text}{sig})"
        if bad:
            whys = "; ".join(f"{c.why} ({c.column})" for c in bad[:3])
            more = f"; and {len(bad) - 3} more" if len(bad) > 3 else ""
            text += f"; {len(bad)} not comparable: {whys}{more}"
        return text

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


def _side(study: StudyData, row: str, column: str) -> tuple[list[float], list[str]]:
    """The final-epoch accuracies of one row in one column (one per seed) and what keeps
    the comparison from being made: runs that diverged, failed or are missing, or no
    finished run at all."""
    accs, problems = [], []
    for c in study.cells_of(row, column):
        acc = getattr(c.run, "test_acc", None) if c.run is not None else None
        if c.status == "done" and acc is not None:
            accs.append(float(acc))
        else:
            problems.append(f"seed {c.run_seed} {c.status}")
    if not accs and not problems:
        problems.append("no finished run")
    return accs, problems


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
                    (a, pa), (z, pz) = _side(study, b, col), _side(study, w, col)
                    problems = {k: v for k, v in (("better", pa), ("worse", pz)) if v}
                    if problems or not a or not z:
                        res.comparisons.append(Comparison(b, w, col, len(a), len(z), None,
                                                          None, problems))
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
