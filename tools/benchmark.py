#!/usr/bin/env python
"""`havic benchmark` as a script: see ``python tools/benchmark.py --help`` (:mod:`havic.cli.benchmark`)."""
import sys

from havic.cli.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
