"""The ``stepfun-openai`` command: one subcommand per task, each a small module of its own."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], int]


def _add_emulator(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .emulator.__main__ import add_emulator_arguments, run_from_args

    parser = subparsers.add_parser(
        "emulator", help="run a local StepFun image API", description="A local StepFun image API for tests and demos."
    )
    add_emulator_arguments(parser)
    parser.set_defaults(handler=run_from_args)


def build_parser() -> argparse.ArgumentParser:
    """The parser with every subcommand; a new subcommand is one more ``_add_*`` function here."""
    parser = argparse.ArgumentParser(prog="stepfun-openai", description="StepFun image generation tools.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from ._cli_commands import add_image_commands, add_models_command

    add_image_commands(subparsers)  # generate, image2image, edit, batch
    _add_emulator(subparsers)
    add_models_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)
