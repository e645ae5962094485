#!/usr/bin/env python
"""`havic train` as a script: see ``python tools/train.py --help`` (:mod:`havic.cli.train`)."""
import sys

from havic.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
