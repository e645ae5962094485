"""Benchmark suite: pretraining step, detector inference, whole-video scoring, preprocessing, cache reads.

Usage:
    python tools/benchmark.py [--quick] [--out DIR] [--only NAME ...] [--threads N] [--iters N]
        [--warmup N] [--video FILE] [--isolate | --no-isolate] [--no-compile] [CONFIG ...] [key=value ...]
    python tools/benchmark.py --render runs/benchmark/benchmark.json --out DIR

Examples:
    python tools/benchmark.py                                   # full size, about 20 minutes on 2 CPU cores
    python tools/benchmark.py --only inference model.variant=official
    python tools/benchmark.py --quick --out /tmp/bench          # tiny configuration, seconds (CI)

Benchmarks (``--only``): ``peak`` (matrix-product FLOP/s per dtype), ``pretrain`` (one step at batch 2:
forward + backward, and with the AdamW update), ``inference`` (detector at batch 1 and 4), ``video``
(a 10 s video scored end to end: our pipeline and, as the same-run baseline, the official pipeline's
costs), ``data`` (preprocessing frames/s, cache size per hour, cache reads in clips/s against the
official PNG layout), ``gpu`` (SDPA kernels, torch.compile, fused AdamW, channels-last: skipped
with a reason without CUDA) and ``features`` (each feature extractor on the video: videos/s, frames/s,
store MB per hour of video). The protocol is :mod:`havic.benchmarks`'s: one warm-up and three timed
calls per case, the median reported, calls disturbed by other processes repeated
(``--max-repeats``); with ``--isolate`` (the default without ``--quick``) every case runs in a
fresh process. On a machine shared with another busy process, ``--threads 1`` gives clean figures.
Writes ``benchmark.json`` and ``benchmark.md`` to ``--out`` (default runs/benchmark).
"""
from __future__ import annotations

import sys
from pathlib import Path

from havic.benchmarks import BENCHMARKS, SuiteOptions, render, run_suite, suite_config, write_report
from havic.cli._common import make_parser
from havic.utils.io import remove_stale_temps


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks (or only re-render a stored report); returns the exit code."""
    parser = make_parser(__doc__)
    parser.add_argument("args", nargs="*", help="YAML config files and key=value overrides")
    parser.add_argument("--quick", action="store_true", help="tiny configuration, one timed call (CI)")
    parser.add_argument("--out", default="runs/benchmark", help="folder for benchmark.json and benchmark.md")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS), metavar="NAME",
                        help=f"benchmarks to run, of {', '.join(BENCHMARKS)}")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--iters", type=int, default=None, help="timed calls per case (default 3, quick 1)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up calls per case (default 1)")
    parser.add_argument("--video-iters", type=int, default=None, help="timed calls per video case (default 2, quick 1)")
    parser.add_argument("--video", default=None, help="video to score and preprocess (default: megamind.avi)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda where available)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile inference cases")
    parser.add_argument("--max-repeats", type=int, default=2,
                        help="extra calls per case to replace calls disturbed by other processes (default 2)")
    iso = parser.add_mutually_exclusive_group()
    iso.add_argument("--isolate", dest="isolate", action="store_true", default=None,
                     help="one fresh process per case (default without --quick)")
    iso.add_argument("--no-isolate", dest="isolate", action="store_false")
    parser.add_argument("--render", default=None, metavar="JSON",
                        help="only recompute the targets and the table of an earlier benchmark.json into --out")
    ns = parser.parse_args(argv)
    if ns.render:
        print(render(Path(ns.render), Path(ns.out)))
        return 0

    cfg, files, overrides = suite_config(ns.args, ns.quick)
    options = SuiteOptions(only=ns.only, quick=ns.quick, threads=ns.threads, iters=ns.iters, warmup=ns.warmup,
                           video_iters=ns.video_iters, video=ns.video, device=ns.device, compile=not ns.no_compile,
                           max_repeats=ns.max_repeats, isolate=ns.isolate)
    out_dir = Path(ns.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir)  # left by a run killed while writing
    command = " ".join(["python tools/benchmark.py", *(argv if argv is not None else sys.argv[1:])])
    report = run_suite(cfg, options, files=files, overrides=overrides, command=command)
    print(write_report(report, out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
