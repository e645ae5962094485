#!/usr/bin/env python
"""`havic preprocess` as a script: see ``python tools/preprocess.py --help`` (:mod:`havic.cli.preprocess`)."""
import sys

from havic.cli.preprocess import main

if __name__ == "__main__":
    sys.exit(main())
