#!/usr/bin/env python3
"""Watch the engine route and execute a handful of swaps, live: `python demo.py --help`.

The demo itself is the `demo` package; this file only runs it, so that `python demo.py` works
from a checkout without installing anything.
"""

import sys

from demo.cli import main

if __name__ == "__main__":
    sys.exit(main())
