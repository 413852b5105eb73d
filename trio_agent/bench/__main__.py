"""``python -m trio_agent.bench``: the same as ``trio-agent bench``."""

from __future__ import annotations

import sys

from .runner import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
