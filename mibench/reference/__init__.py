"""Published numbers packaged with mibench (Choi & Lee Table 2; eta-MINE Table 3, the jigsaw probe accuracies)."""
