"""`python -m fxbench ...` is the same as the `fxbench` command."""

from .cli import main

main()
