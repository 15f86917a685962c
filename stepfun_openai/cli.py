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


class _Version(argparse.Action):
    """``--version``: this package's version and the openai SDK's (what a bug report needs)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="print the versions and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from importlib.metadata import PackageNotFoundError, version

        from . import __version__

        try:
            openai_version = version("openai")  # its metadata: cheaper than importing openai
        except PackageNotFoundError:  # pragma: no cover - openai is a dependency
            openai_version = "not installed"
        print(f"stepfun-openai {__version__} (openai {openai_version})")  # stdout, as argparse's own
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The parser with every subcommand; a new subcommand is one more ``_add_*`` function here."""
    parser = argparse.ArgumentParser(prog="stepfun-openai", description="StepFun image generation tools.")
    parser.add_argument("--version", action=_Version)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from ._cli_account import add_account_commands
    from ._cli_commands import add_image_commands, add_models_command
    from ._cli_mcp import add_mcp_command

    add_image_commands(subparsers)  # generate, image2image, edit, batch
    _add_emulator(subparsers)
    add_models_command(subparsers)
    add_account_commands(subparsers)  # balance, doctor
    add_mcp_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)
