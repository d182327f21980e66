"""mibench: a benchmark suite for neural mutual-information estimators."""
__version__ = "0.1.0"
