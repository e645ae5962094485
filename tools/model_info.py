#!/usr/bin/env python
"""`havic model-info` as a script: see ``python tools/model_info.py --help`` (:mod:`havic.cli.model_info`)."""
import sys

from havic.cli.model_info import main

if __name__ == "__main__":
    sys.exit(main())
