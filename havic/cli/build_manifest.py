"""Build a manifest CSV for one dataset, optionally with a seeded protocol split.

    python tools/build_manifest.py fakeavceleb /data/FakeAVCeleb_v1.2 --out favc.csv --split paper --seed 0

Writes OUT (paths relative to ROOT) and OUT.skipped.csv (every file that did not become a row, with
the reason). --split cross-manip also writes one manifest per held-out category, <OUT stem>.<CATEGORY>.csv,
beside OUT, which then holds the identity-disjoint base split shared by all folds.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path

from havic.cli._common import fail, make_parser
from havic.data.adapters import ADAPTERS, build, cross_manipulation_folds, write_skipped
from havic.data.manifest import split_by_group, split_by_video, summarize, write_manifest
from havic.utils.io import remove_stale_temps

DEFAULT_FRACTIONS = {"paper": (0.7, 0.3), "identity": (0.63, 0.07, 0.3), "cross-manip": (0.7, 0.3)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = make_parser(__doc__)
    p.add_argument("dataset", choices=sorted(ADAPTERS), help="which adapter reads the folder")
    p.add_argument("root", type=Path, help="dataset root; manifest paths are relative to it")
    p.add_argument("--out", type=Path, required=True, help="manifest CSV to write")
    p.add_argument("--split", choices=("none", "paper", "identity", "cross-manip"), default="none",
                   help="none: the dataset's own split (if any); paper: seeded split by video; identity: "
                        "seeded identity-disjoint split; cross-manip: FakeAVCeleb leave-one-category-out folds")
    p.add_argument("--fractions", type=float, nargs="+", metavar="F",
                   help="TRAIN [VAL] TEST; default paper 0.7 0.3, identity 0.63 0.07 0.3, cross-manip 0.7 0.3")
    p.add_argument("--seed", type=int, default=0, help="seed of the split")
    p.add_argument("--stratify", nargs="+", default=(), metavar="COLUMN",
                   help="columns whose values every subset should hold in proportion (paper, identity)")
    p.add_argument("--meta-csv", type=Path, help="fakeavceleb: meta_data.csv (default ROOT/meta_data.csv)")
    p.add_argument("--subset-list", type=Path, help="kodf: file listing the paths (relative to ROOT) to keep")
    p.add_argument("--labels-csv", type=Path, help="generic: CSV with path,label instead of real/ and fake/")
    p.add_argument("--subsets", nargs="+", help="lrs2: main pretrain; lrs3: pretrain trainval test")
    p.add_argument("--split-csv", nargs="+", metavar="SPLIT=CSV",
                   help="av1m, avlips: lists of the videos of each split (e.g. SSR-DFD's); only listed videos are kept")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.root.is_dir():
        return fail(f"dataset root {args.root} is not a folder")
    if args.stratify and args.split not in ("paper", "identity"):
        return fail("--stratify applies to --split paper or identity")
    if args.fractions and args.split == "none":
        return fail("--fractions needs a --split")
    if args.split == "cross-manip" and args.dataset != "fakeavceleb":
        return fail("--split cross-manip is defined for fakeavceleb only")
    try:
        result = build(args.dataset, args.root, meta_csv=args.meta_csv, subset_list=args.subset_list,
                       labels_csv=args.labels_csv, subsets=args.subsets, split_csv=args.split_csv)
        fractions = tuple(args.fractions or DEFAULT_FRACTIONS.get(args.split, ()))
        rows, folds = result.manifest.rows, {}
        if args.split == "paper":
            rows = split_by_video(rows, fractions, args.seed, args.stratify)
        elif args.split == "identity":
            rows = split_by_group(rows, fractions, args.seed, args.stratify)
        elif args.split == "cross-manip":
            rows, folds = cross_manipulation_folds(rows, fractions, args.seed, by="group")
    except (ValueError, FileNotFoundError) as err:
        return fail(err)

    manifest = result.manifest.with_rows(rows)
    remove_stale_temps(args.out.parent)  # left by a run killed while writing
    written = [write_manifest(manifest, args.out)]
    for category, fold in folds.items():
        written.append(write_manifest(manifest.with_rows(fold), args.out.with_name(f"{args.out.stem}.{category}.csv")))
    written.append(write_skipped(result.skipped, args.out.with_name(f"{args.out.stem}.skipped.csv")))
    result.log_summary(args.dataset)

    print(summarize(manifest))
    for category, fold in folds.items():
        print(f"\nfold {category} (held out):\n{summarize(fold, ('split', 'category'))}")
    if result.skipped:
        print(f"\nskipped {len(result.skipped)} file(s):")
        for reason, n in sorted(Counter(s.reason for s in result.skipped).items()):
            print(f"  {n:>7}  {reason}")
    for kind, n in sorted(result.ignored.items()):
        print(f"ignored {n} {kind}")
    print("\nwrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
