"""The ``lexalign`` command: one console script, one subcommand per stage.

Only argparse is imported here so that ``lexalign --help`` and ``lexalign <cmd> --help`` answer at once;
each command imports its stage inside its handler.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

logger = logging.getLogger("lexalign")

Handler = Callable[[argparse.Namespace], int | None]


def _add_config_args(parser: argparse.ArgumentParser, default_config: str | None) -> None:
    parser.add_argument("--config", default=default_config,
                        help=f"YAML config (default: {default_config})" if default_config else "YAML config")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="override config keys, e.g. training.max_steps=20 (beats the YAML file)")


# --------------------------------------------------------------------------- handlers


def _data_build(args: argparse.Namespace) -> None:
    from lexalign.data.build import run_build

    run_build(args.config, args.overrides, source=args.source, out=args.out)


def _data_stats(args: argparse.Namespace) -> None:
    from lexalign.data.stats import print_stats

    print_stats(args.dir)


def _base_build(args: argparse.Namespace) -> None:
    from lexalign.basemodel import build_base_model

    run_dir = build_base_model(args.config, args.overrides)
    print(f"tiny base model: {run_dir / 'model'}")


def _sft(args: argparse.Namespace) -> None:
    from lexalign.sft.train import run_sft

    run_dir = run_sft(args.config, args.overrides)
    print(f"SFT run: {run_dir}")


def _export(args: argparse.Namespace) -> None:
    from lexalign.sft.export import export_merged

    out = export_merged(args.run_dir, args.out, args.dtype)
    print(f"merged model: {out}")


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lexalign",
        description="Contract-review assistant: data, SFT, preferences, reward model, DPO/PPO, serving, evaluation.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    data = commands.add_parser("data", help="build and inspect the legal datasets")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    build = data_commands.add_parser("build", help="build instruction, preference and ranking data from the raw corpora")
    build.add_argument("--source", default=None, help="folder with cuad/, claudette/, acord/ (default: from the config)")
    build.add_argument("--out", default=None, help="output folder (default: from the config)")
    _add_config_args(build, "configs/data.yaml")
    build.set_defaults(handler=_data_build)
    stats = data_commands.add_parser("stats", help="counts, lengths and label balance of a built dataset folder")
    stats.add_argument("dir", nargs="?", default=None, help="built dataset folder (default: the shipped one)")
    stats.set_defaults(handler=_data_stats)

    base = commands.add_parser("base", help="the tiny embedded base model")
    base_commands = base.add_subparsers(dest="base_command", metavar="ACTION", required=True)
    base_build = base_commands.add_parser("build", help="train a tokenizer and pretrain a tiny Llama on contract text")
    _add_config_args(base_build, "configs/base.yaml")
    base_build.set_defaults(handler=_base_build)

    sft = commands.add_parser("sft", help="QLoRA/LoRA/full instruction tuning on the legal chat data (TRL SFTTrainer)")
    _add_config_args(sft, "configs/sft.yaml")
    sft.set_defaults(handler=_sft)

    export = commands.add_parser("export", help="merge a run's LoRA adapter into the full-precision base for serving")
    export.add_argument("run_dir", help="a completed sft/dpo/ppo run directory")
    export.add_argument("--out", default=None, help="output folder (default: RUN_DIR/merged)")
    export.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="weight dtype of the merged model (default: float32)")
    export.set_defaults(handler=_export)

    return parser


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    configure_logging(args.verbose)
    from lexalign.errors import LexalignError

    try:
        return args.handler(args) or 0
    except LexalignError as err:
        print(f"lexalign {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lexalign {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
