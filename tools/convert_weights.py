#!/usr/bin/env python
"""`havic convert` as a script: see ``python tools/convert_weights.py --help`` (:mod:`havic.cli.convert_weights`)."""
import sys

from havic.cli.convert_weights import main

if __name__ == "__main__":
    sys.exit(main())
