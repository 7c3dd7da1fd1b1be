#!/usr/bin/env python
"""Training throughput benchmark (same flags as ``i2i bench``); see ``python tools/bench.py --help``."""
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from i2i.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
