"""``python -m searchindex.cli``: the same command as the ``searchindex`` script."""

from . import main

main()
