"""``python -m ir3de``: the ``ir3de`` command, for where its script is not on PATH."""

import sys

from .cli import main

sys.exit(main())
