"""`python -m mlmake` is the mlmake command."""

from mlmake.cli import main

main()
