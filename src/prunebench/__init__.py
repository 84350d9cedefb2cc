"""prunebench: fair, fast and explainable neural-network pruning comparisons."""

__version__ = "0.1.0"
