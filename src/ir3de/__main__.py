"""``python -m ir3de``: the ``ir3de`` command, for where its script is not on PATH."""

import sys

from .cli import main

if __name__ == "__main__":  # (importing the module, as doctest collection does, runs nothing)
    sys.exit(main())
