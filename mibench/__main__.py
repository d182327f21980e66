from mibench.cli import main

main()
