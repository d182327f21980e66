"""Published numbers packaged with mibench: Choi & Lee Table 2; eta-MINE Table 2 (layer pairs), Table 3 (the jigsaw
probe accuracies) and Fig. 3b (generator steps to all 25 modes, from the text); Deep InfoMax Table 1 (Hjelm et al.)."""
