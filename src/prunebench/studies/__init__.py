"""Studies: grids of recipes that share stages (a dense model is trained once per key)."""

from prunebench.studies.grid import expand_grid

__all__ = ["expand_grid"]
