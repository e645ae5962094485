#!/usr/bin/env python
"""`havic evaluate` as a script: see ``python tools/evaluate.py --help`` (:mod:`havic.cli.evaluate`)."""
import sys

from havic.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
