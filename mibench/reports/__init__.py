"""The reports layer: one loader of run records (:mod:`.runs`) and, per paper, one module holding its tables, figures
and the published numbers they are compared with; ``mibench leaderboard`` (Markdown, LaTeX, CSV) and ``mibench
report`` (one HTML page) only dispatch to :data:`SECTIONS`.

=================  ==========================================================================================
module             paper: sections (benchmarks)
=================  ==========================================================================================
:mod:`.poole`      Poole et al. 2019: Fig. 2 staircase, Fig. 3 optimal critic, Fig. 4 gradients, §2.5 sandwich,
                   Fig. 5 dSprites
:mod:`.choi_lee`   Choi & Lee 2022: Table 2 (SLB / CLB) with Fig. 6, §3-4 one-hot drift and explosion
:mod:`.eta_mine`   η-MINE: Fig. 3a (eta_gaussian), Fig. 3b (migan), Table 2 (layerpair), Table 3 (jigsaw)
:mod:`.hjelm`      Deep InfoMax Table 1 (dim)
:mod:`.czyz`       Beyond-Normal (samples)
=================  ==========================================================================================
"""
from __future__ import annotations

from .runs import load, scan
from .tables import Section


def sections() -> tuple[Section, ...]:
    """Every paper's sections, in the order the leaderboard and the report show them."""
    from . import choi_lee, czyz, eta_mine, hjelm, poole

    return (*choi_lee.SECTIONS[:1], *poole.SECTIONS[:1], *choi_lee.SECTIONS[1:], *czyz.SECTIONS, *poole.SECTIONS[1:],
            *eta_mine.SECTIONS, *hjelm.SECTIONS)


__all__ = ["Section", "load", "scan", "sections"]
