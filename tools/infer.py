#!/usr/bin/env python
"""`havic infer` as a script: see ``python tools/infer.py --help`` (:mod:`havic.cli.infer`)."""
import sys

from havic.cli.infer import main

if __name__ == "__main__":
    sys.exit(main())
