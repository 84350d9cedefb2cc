"""Fair comparison: setup fingerprints, comparability checks, calibration, statistics."""
