"""``python -m mibench.figures {onehot,eta_fig3a} RUNS_DIR [--out DIR]``: the paper's figures from a set of finished
runs, read by the one loader and drawn by the paper modules of :mod:`mibench.reports`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    from ..reports import choi_lee, eta_mine

    studies = {"onehot": choi_lee.onehot_study, "eta_fig3a": eta_mine.eta_fig3a_study}
    p = argparse.ArgumentParser(prog="python -m mibench.figures", description=__doc__)
    p.add_argument("study", choices=sorted(studies))
    p.add_argument("runs", type=Path, help="a directory searched recursively for finished runs")
    p.add_argument("--out", type=Path, default=None, help="where to write the figures (default: RUNS)")
    a = p.parse_args(argv)
    if not a.runs.is_dir():
        print(f"mibench.figures: error: {a.runs} is not a directory", file=sys.stderr)
        raise SystemExit(2)
    for path in studies[a.study](a.runs, a.out or a.runs):
        print(path)


if __name__ == "__main__":
    main()
