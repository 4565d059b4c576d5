"""``python -m kpl.cli``: the same as the ``kpl`` command."""

from kpl.cli import main

main()
