"""``python -m trio_agent.cli``: the same as ``trio-agent``."""

from __future__ import annotations

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
