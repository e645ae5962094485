"""Write a folder to publish a model from: model.safetensors, config.yaml and a model card (README.md).

    havic export runs/favc-<stamp> --out release/favc --metrics eval/favc/metrics.json --repo-id ORG/favc
    hf upload ORG/favc release/favc        # the upload is yours to run: export never uploads

RUN_OR_WEIGHTS is a training run folder (export/<which>.safetensors, else checkpoints/<which>.ckpt), a
weights file or checkpoint of this project, an official HAVIC fine-tuned state dict, or an hf:// id.
The card quotes --metrics (the metrics.json of `havic evaluate --out-dir`) and the settings.
"""
from __future__ import annotations

import argparse
import re
import sys

from havic.cli._common import EXIT_OK, fail, make_parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = make_parser(__doc__, prog="havic export")
    p.add_argument("source", metavar="RUN_OR_WEIGHTS", help="training run folder, weights file, checkpoint or hf:// id")
    p.add_argument("--out", required=True, help="folder to write (created; other files in it are kept)")
    p.add_argument("--which", choices=("best", "last"), default="best", help="weights of a run folder")
    p.add_argument("--metrics", help="metrics.json of `havic evaluate` for the card's evaluation table")
    p.add_argument("--repo-id", help="ORG/REPO the folder is meant for (used in the card's examples)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    if ns.repo_id is not None and not re.fullmatch(r"[\w.-]+/[\w.-]+", ns.repo_id):
        return fail(f"--repo-id {ns.repo_id!r}: expected ORG/REPO")
    from havic.checkpoints import CheckpointError
    from havic.config import ConfigError
    from havic.model_card import export_model

    try:
        files = export_model(ns.source, ns.out, which=ns.which, metrics=ns.metrics, repo_id=ns.repo_id)
    except (CheckpointError, ConfigError, ValueError, OSError) as err:
        return fail(err)
    for role, path in files.items():
        print(f"wrote {role}: {path}")
    repo = ns.repo_id or "ORG/REPO"
    print(f"nothing was uploaded; to publish: hf upload {repo} {ns.out}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
