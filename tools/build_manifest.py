#!/usr/bin/env python
"""`havic build-manifest` as a script: see ``python tools/build_manifest.py --help`` (:mod:`havic.cli.build_manifest`)."""
import sys

from havic.cli.build_manifest import main

if __name__ == "__main__":
    sys.exit(main())
