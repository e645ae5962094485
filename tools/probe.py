#!/usr/bin/env python
"""`havic probe` as a script: see ``python tools/probe.py --help`` (:mod:`havic.cli.probe`)."""
import sys

from havic.cli.probe import main

if __name__ == "__main__":
    sys.exit(main())
