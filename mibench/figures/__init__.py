"""Multi-run figures: ``python -m mibench.figures <study> <runs dir>`` (see ``__main__``)."""
