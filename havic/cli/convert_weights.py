"""Convert weights into havic checkpoints (safetensors + the resolved config in the metadata).

Usage:
    python tools/convert_weights.py init-pretrain --audiomae P --marlin P --out F [CONFIG ...] [key=value ...]
    python tools/convert_weights.py pretrain-to-detector --in F --out F [CONFIG ...] [key=value ...]
    python tools/convert_weights.py official --in F --kind pretrain|detector --out F [CONFIG ...] [key=value ...]

``init-pretrain`` writes a full pretrainer state dict: AudioMAE/MARLIN tensors where they exist, a
fresh init (seeded by ``seed``) elsewhere. ``pretrain-to-detector`` keeps the encoders and the fusion
module and initialises the detection heads (the config defaults to the one stored in the input); the
file records its heads as untrained, so that it is fine-tuned before it scores (``havic infer``
refuses it without ``--allow-untrained-heads``). ``official`` converts a released official HAVIC
state dict (``model.variant=official`` is forced; a detector's heads are recorded as trained).
Each prints the strict accounting: what was loaded, skipped and why, and left at init.
The conversions are :mod:`havic.checkpoints` functions.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from havic import checkpoints as ck
from havic.cli._common import fail, make_parser
from havic.config import ConfigError, load_config, split_items
from havic.utils.io import remove_stale_temps


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    kwargs = {"formatter_class": parser.formatter_class, "epilog": parser.epilog}
    init = sub.add_parser("init-pretrain", help="AudioMAE + MARLIN -> pretrainer initialisation", **kwargs)
    init.add_argument("--audiomae", required=True, help="AudioMAE checkpoint (pretrained.pth)")
    init.add_argument("--marlin", required=True, help="MARLIN checkpoint (marlin_vit_base_ytf.full.pt)")
    to_det = sub.add_parser("pretrain-to-detector", help="pretrainer -> detector backbone (untrained heads)",
                            **kwargs)
    to_det.add_argument("--in", dest="src", required=True, help="pretraining weights or checkpoint")
    official = sub.add_parser("official", help="official HAVIC state dict -> official variant", **kwargs)
    official.add_argument("--in", dest="src", required=True, help="released official HAVIC state dict")
    official.add_argument("--kind", choices=ck.OFFICIAL_KINDS, required=True, help="which network it holds")
    for p in (init, to_det, official):
        p.add_argument("--out", required=True, help="the .safetensors weights file to write")
        p.add_argument("args", nargs="*", help="YAML config files and key=value overrides")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    files, overrides = split_items(ns.args)
    remove_stale_temps(Path(ns.out).parent)
    try:
        if ns.command == "init-pretrain":
            cfg = load_config(files, overrides)
            model, conversion, report = ck.init_pretrainer(
                ck.load_state_dict_file(ns.audiomae), ck.load_state_dict_file(ns.marlin), cfg)
            print(conversion.summary())
            kind, heads = "pretrain", None
        elif ns.command == "pretrain-to-detector":
            cfg = ck.stored_config(ns.src) if not ns.args else None
            if cfg is not None:
                print(f"using the config stored in {ns.src}")
            else:
                cfg = load_config(files, overrides)
            model, report = ck.detector_from_pretrainer(ck.load_state_dict_file(ns.src), cfg)
            kind, heads = "detector", "untrained"
        else:
            cfg = load_config(files, ["model.variant=official", *overrides])
            model, report, tables = ck.load_official(ck.load_state_dict_file(ns.src), ns.kind, cfg)
            print("fixed tables, max abs difference to ours: " + ", ".join(f"{k} {v:.2e}" for k, v in tables.items()))
            kind, heads = ns.kind, ("trained" if ns.kind == "detector" else None)
    except (ck.CheckpointError, ConfigError, ValueError, OSError) as err:
        return fail(err)
    print(report.summary())
    ck.save_weights(ns.out, model.state_dict(), cfg, kind, heads=heads)
    print(f"wrote {ns.out} ({kind}{', heads untrained' if heads == 'untrained' else ''}, "
          f"{cfg.model.variant} variant)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
