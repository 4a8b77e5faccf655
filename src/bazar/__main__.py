"""`python -m bazar` is the `bazar` command."""

from bazar.cli import main

main()
