"""Print parameter counts of the HAVIC networks per top-level module.

Usage:
    python tools/model_info.py [CONFIG ...] [key=value ...] [--kind pretrain|detector|both]

Example:
    python tools/model_info.py configs/model/official.yaml
"""
from __future__ import annotations

import sys

from havic.cli._common import fail, make_parser
from havic.config import ConfigError, load_config
from havic.models import build_model, parameter_report


def format_report(title: str, report: dict[str, dict[str, int]]) -> str:
    rows = [f"{title}", f"{'module':<24}{'trainable':>16}{'fixed tables':>16}"]
    for name, counts in report.items():
        if name == "total":
            rows.append("-" * 56)
        rows.append(f"{name:<24}{counts['trainable']:>16,}{counts['fixed_tables']:>16,}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("args", nargs="*", help="YAML config files and key=value overrides")
    parser.add_argument("--kind", choices=["pretrain", "detector", "both"], default="both", help="which network")
    ns = parser.parse_args(argv)
    files = [a for a in ns.args if "=" not in a]
    overrides = [a for a in ns.args if "=" in a]
    try:
        cfg = load_config(files, overrides)
    except (ConfigError, OSError) as err:
        return fail(err)
    kinds = ["pretrain", "detector"] if ns.kind == "both" else [ns.kind]
    for kind in kinds:
        print(format_report(f"{kind} ({cfg.model.variant} variant)", parameter_report(build_model(cfg.model, kind))))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
