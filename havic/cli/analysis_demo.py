"""Probe the demo's pretrained HAVIC per tap against its random-init twin (``make analysis``).

Usage:
    python tools/analysis_demo.py [--demo-dir RUN] [--run-dir DIR] [--quick] [--max-epochs N] [key=value ...]

With --demo-dir (a `make demo` run folder) its detection set and pretraining export are used;
without, the data, manifests and a short pretraining are made in the run folder
(configs/demo/demo.yaml + configs/demo/analysis.yaml; key=value items override them, --quick
merges configs/demo/quick.yaml instead of analysis.yaml). Then both encoders' segment features of
every detection video, one LSE probe per stream and encoder (train split, AUC on the test split),
and the table: printed, and in the run folder (default runs/analysis-<timestamp>) as table.md,
index.html (with the AUC heatmap) and summary.json.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from havic.cli._common import default_out_dir, fail, make_parser


def main(argv: list[str] | None = None) -> int:
    p = make_parser(__doc__)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="demo settings (configs/demo/demo.yaml)")
    p.add_argument("--demo-dir", type=Path, help="a `make demo` run folder to reuse (data and pretraining)")
    p.add_argument("--run-dir", type=Path, help="run folder (default: runs/analysis-<timestamp>)")
    p.add_argument("--quick", action="store_true", help="reduced run: few clips, few steps (configs/demo/quick.yaml)")
    p.add_argument("--max-epochs", type=int, default=40, help="epoch cap of every probe")
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate of every probe")
    p.add_argument("--patience", type=int, default=8, help="early-stopping patience of every probe")
    p.add_argument("--probe-seed", type=int, default=43, help="seed of every probe's initialisation and shuffling")
    p.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    ns = p.parse_args(argv)
    if ns.demo_dir is not None and not ns.demo_dir.is_dir():
        return fail(f"--demo-dir {ns.demo_dir}: no such folder")

    import cv2
    import torch

    torch.set_num_threads(max(1, ns.threads))
    cv2.setNumThreads(max(1, ns.threads))
    from havic.demo import DEMO_CONFIG, QUICK_CONFIG, DemoError, load_settings
    from havic.demo.analysis import ANALYSIS_CONFIG, Analysis, AnalysisOptions
    from havic.utils.logging import setup_logging

    setup_logging()
    try:
        settings = load_settings([DEMO_CONFIG, QUICK_CONFIG if ns.quick else ANALYSIS_CONFIG], ns.overrides)
    except DemoError as err:
        return fail(err)
    run_dir = ns.run_dir or default_out_dir("analysis")
    options = AnalysisOptions(max_epochs=ns.max_epochs, lr=ns.lr, patience=ns.patience, seed=ns.probe_seed)
    analysis = Analysis(settings, run_dir, ns.demo_dir, options, echo=lambda line: print(line, flush=True))
    start = time.perf_counter()
    try:
        table = analysis.run()
    except DemoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("\nProbe test AUC (%) per stream, pretrained HAVIC vs its random-init twin:\n")
    print(table)
    print("\nstage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in analysis.timings.items())
          + f"; total {time.perf_counter() - start:.0f} s")
    print(f"run folder: {run_dir} (index.html, table.md, summary.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
