"""Built-in pruning criteria, one small module each; importing a module registers it."""

from prunebench.pruning.criteria import (  # noqa: F401
    bn_scale,
    fpgm,
    l1,
    l2,
    random,
    taylor_fo,
)
