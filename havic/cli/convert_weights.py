"""Convert weights into havic checkpoints (safetensors + the resolved config in the metadata).

Usage:
    python tools/convert_weights.py init-pretrain --audiomae P --marlin P --out F [CONFIG ...] [key=value ...]
    python tools/convert_weights.py pretrain-to-detector --in F --out F [CONFIG ...] [key=value ...]
    python tools/convert_weights.py official --in F --kind pretrain|detector --out F [CONFIG ...] [key=value ...]

``init-pretrain`` writes a full pretrainer state dict: AudioMAE/MARLIN tensors where they exist, a
fresh init (seeded by ``seed``) elsewhere. ``pretrain-to-detector`` keeps the encoders and the fusion
module and initialises the detection heads (the config defaults to the one stored in the input).
``official`` converts a released official HAVIC state dict (``model.variant=official`` is forced).
Each prints the strict accounting: what was loaded, skipped and why, and left at init.
The conversions are :mod:`havic.checkpoints` functions.
"""
from __future__ import annotations

import argparse
import sys

from havic import checkpoints as ck
from havic.config import ConfigError, load_config, split_items


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init-pretrain", help="AudioMAE + MARLIN -> pretrainer initialisation")
    init.add_argument("--audiomae", required=True)
    init.add_argument("--marlin", required=True)
    to_det = sub.add_parser("pretrain-to-detector", help="pretrainer -> detector backbone")
    to_det.add_argument("--in", dest="src", required=True)
    official = sub.add_parser("official", help="official HAVIC state dict -> official variant")
    official.add_argument("--in", dest="src", required=True)
    official.add_argument("--kind", choices=ck.OFFICIAL_KINDS, required=True)
    for p in (init, to_det, official):
        p.add_argument("--out", required=True)
        p.add_argument("args", nargs="*", help="YAML config files and key=value overrides")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    files, overrides = split_items(ns.args)
    try:
        if ns.command == "init-pretrain":
            cfg = load_config(files, overrides)
            model, conversion, report = ck.init_pretrainer(
                ck.load_state_dict_file(ns.audiomae), ck.load_state_dict_file(ns.marlin), cfg)
            print(conversion.summary())
            kind = "pretrain"
        elif ns.command == "pretrain-to-detector":
            cfg = ck.stored_config(ns.src) if not ns.args else None
            if cfg is not None:
                print(f"using the config stored in {ns.src}")
            else:
                cfg = load_config(files, overrides)
            model, report = ck.detector_from_pretrainer(ck.load_state_dict_file(ns.src), cfg)
            kind = "detector"
        else:
            cfg = load_config(files, ["model.variant=official", *overrides])
            model, report, tables = ck.load_official(ck.load_state_dict_file(ns.src), ns.kind, cfg)
            print("fixed tables, max abs difference to ours: " + ", ".join(f"{k} {v:.2e}" for k, v in tables.items()))
            kind = ns.kind
    except (ck.CheckpointError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(report.summary())
    ck.save_weights(ns.out, model.state_dict(), cfg, kind)
    print(f"wrote {ns.out} ({kind}, {cfg.model.variant} variant)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
