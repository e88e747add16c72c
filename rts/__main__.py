"""``python -m rts``: the same as the ``rts`` command."""

from __future__ import annotations

import sys

from rts.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
