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
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from havic import checkpoints as ck
from havic.config import ConfigError, from_container, load_config
from havic.models import build_model


def fresh_model(cfg, kind: str) -> torch.nn.Module:
    torch.manual_seed(cfg.seed)
    return build_model(cfg.model, kind)


def save(path: str, model: torch.nn.Module, cfg, kind: str) -> None:
    ck.save_weights(path, model.state_dict(), cfg, kind)
    print(f"wrote {path} ({kind}, {cfg.model.variant} variant)")


def main(argv: list[str] | None = None) -> int:
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
    ns = parser.parse_args(argv)
    files = [a for a in ns.args if "=" not in a]
    overrides = [a for a in ns.args if "=" in a]
    try:
        if ns.command == "init-pretrain":
            cfg = load_config(files, overrides)
            sd, conversion = ck.convert_audiomae_marlin(
                ck.load_state_dict_file(ns.audiomae), ck.load_state_dict_file(ns.marlin), cfg.model)
            print(conversion.summary())
            model, kind = fresh_model(cfg, "pretrain"), "pretrain"
            report = ck.load_with_report(model, sd, expected_missing=ck.PRETRAIN_INIT_ONLY)
        elif ns.command == "pretrain-to-detector":
            stored = ck.read_safetensors_metadata(ns.src).get("config") if ns.src.endswith(".safetensors") else None
            if stored and not ns.args:
                cfg = from_container(json.loads(stored))
                print(f"using the config stored in {ns.src}")
            else:
                cfg = load_config(files, overrides)
            sd = ck.pretrain_to_detector(ck.load_state_dict_file(ns.src))
            model, kind = fresh_model(cfg, "detector"), "detector"
            report = ck.load_with_report(model, sd, expected_missing=ck.DETECTOR_HEAD_PATTERNS)
        else:
            cfg = load_config(files, ["model.variant=official", *overrides])
            official_sd = ck.load_state_dict_file(ns.src)
            sd, ignored = ck.convert_official_havic(official_sd, ns.kind)
            model, kind = fresh_model(cfg, ns.kind), ns.kind
            report = ck.load_with_report(model, sd)
            report.ignored.update(ignored)
            tables = ck.compare_fixed_tables(official_sd, model)
            print("fixed tables, max abs difference to ours: " + ", ".join(f"{k} {v:.2e}" for k, v in tables.items()))
            if any(v > 1e-3 for v in tables.values()):
                raise ck.CheckpointError("official fixed tables differ from ours: wrong token layout or sizes")
    except (ck.CheckpointError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(report.summary())
    save(ns.out, model, cfg, kind)
    return 0


if __name__ == "__main__":
    sys.exit(main())
