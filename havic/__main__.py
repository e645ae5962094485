"""``python -m havic <command>``: the same as the ``havic`` console script."""
import sys

from havic.cli import main

sys.exit(main())
