"""Published numbers packaged with mibench (Choi & Lee Table 2)."""
