"""Run HAVIC end to end on a generated dataset and print the results table (``make demo``).

Usage:
    python tools/demo.py [--run-dir DIR] [--quick] [--threads N] [--no-pretraining] [key=value ...]

Generates synthetic talking-face videos (real and four fake categories), builds manifests,
preprocesses them, pretrains a small HAVIC on real clips, fine-tunes it, fine-tunes the same
detector without pretraining ("w/o HCP"), scores the held-out videos with sliding windows and
evaluates both. key=value items override configs/demo/demo.yaml (e.g. real_videos=40 seed=1);
--quick merges configs/demo/quick.yaml (a reduced run, for tests). Everything goes to the run
folder (default runs/demo-<timestamp>), printed at the end.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from havic.cli._common import fail, make_parser


def main(argv: list[str] | None = None) -> int:
    p = make_parser(__doc__)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="demo settings (configs/demo/demo.yaml)")
    p.add_argument("--run-dir", type=Path, help="run folder (default: runs/demo-<timestamp>)")
    p.add_argument("--quick", action="store_true", help="reduced run: few clips, few steps (configs/demo/quick.yaml)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of this process; 1 (default) leaves the second core to the data-loader "
                        "worker, and small ops run faster without thread hand-offs")
    p.add_argument("--no-pretraining", action="store_true", help="skip pretraining: the w/o HCP detector alone")
    ns = p.parse_args(argv)

    import cv2
    import torch

    torch.set_num_threads(max(1, ns.threads))
    cv2.setNumThreads(max(1, ns.threads))
    from havic.demo import DEMO_CONFIG, QUICK_CONFIG, Demo, DemoError, default_run_dir, load_settings
    from havic.utils.logging import setup_logging

    setup_logging()
    try:
        settings = load_settings([DEMO_CONFIG, *([QUICK_CONFIG] if ns.quick else [])], ns.overrides)
    except DemoError as err:
        return fail(err)
    run_dir = ns.run_dir or default_run_dir()
    demo = Demo(settings, run_dir, echo=lambda line: print(line, flush=True))
    start = time.perf_counter()
    try:
        table = demo.run(pretraining=not ns.no_pretraining)
    except DemoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    total = time.perf_counter() - start
    print("\n" + "=" * 78)
    print("Held-out test videos (values in %; fake categories ranked against all real test videos):\n")
    print(table)
    print("\nstage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in demo.timings.items()) + f"; total {total:.0f} s")
    print(f"run folder: {run_dir} (report.md, index.html, summary.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
