"""Built-in pruning criteria, one small module each; importing a module registers it."""

from prunebench.pruning.criteria import l1  # noqa: F401
