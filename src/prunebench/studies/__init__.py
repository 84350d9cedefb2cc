"""Studies: grids of recipes that share stages (a dense model is trained once per key)."""

from prunebench.studies.grid import expand_grid
from prunebench.studies.runner import expand_study, manifest_path, run_studies, run_study
from prunebench.studies.spec import STUDIES, StudySpec, load_study

__all__ = ["STUDIES", "StudySpec", "expand_grid", "expand_study", "load_study", "manifest_path",
           "run_studies", "run_study"]
