"""Fair comparison: setup fingerprints, comparability checks, calibration, statistics.

* :mod:`.fingerprint` -- what a stored run's setup is (``fingerprint(row)``)
* :mod:`.setups`      -- the paper's setups S1..SX-B as predicates, ``differences``
* :mod:`.comparison`  -- ``compare``: comparable sets, pairwise setups, rankings
* :mod:`.calibrate`   -- LR calibration under one budget (selects on validation only)
* :mod:`.crossval`    -- the A+FT_B / B+FT_A recipe cross-validation
* :mod:`.stats`       -- mean ± std, t confidence intervals, Welch's t-test
* :mod:`.card`        -- citable Markdown/JSON benchmark cards
"""

from prunebench.compare.calibrate import calibrate, run_calibration, select_lr
from prunebench.compare.card import build_card, write_card
from prunebench.compare.comparison import compare, load_fingerprints
from prunebench.compare.crossval import crossval
from prunebench.compare.errors import CompareError
from prunebench.compare.fingerprint import Fingerprint, fingerprint
from prunebench.compare.setups import (
    SETUPS,
    differences,
    satisfied_setups,
    satisfies,
    strictest_setup,
)
from prunebench.compare.stats import summarize, welch

__all__ = [
    "SETUPS",
    "CompareError",
    "Fingerprint",
    "build_card",
    "calibrate",
    "compare",
    "crossval",
    "differences",
    "fingerprint",
    "load_fingerprints",
    "run_calibration",
    "satisfied_setups",
    "satisfies",
    "select_lr",
    "strictest_setup",
    "summarize",
    "welch",
    "write_card",
]
