#!/usr/bin/env python
"""`havic demo` as a script: see ``python tools/demo.py --help`` (:mod:`havic.cli.demo`)."""
import sys

from havic.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
