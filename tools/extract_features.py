#!/usr/bin/env python
"""`havic extract-features` as a script: see ``python tools/extract_features.py --help`` (:mod:`havic.cli.extract_features`)."""
import sys

from havic.cli.extract_features import main

if __name__ == "__main__":
    sys.exit(main())
