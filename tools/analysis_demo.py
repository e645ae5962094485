#!/usr/bin/env python
"""`havic analysis-demo` as a script: see ``python tools/analysis_demo.py --help`` (:mod:`havic.cli.analysis_demo`)."""
import sys

from havic.cli.analysis_demo import main

if __name__ == "__main__":
    sys.exit(main())
