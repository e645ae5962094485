#!/usr/bin/env python
"""`havic export` as a script: see ``python tools/export.py --help`` (:mod:`havic.cli.export`)."""
import sys

from havic.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
