"""``stepfun-openai mcp``: the MCP server (:mod:`stepfun_openai.mcp_server`) over stdio or loopback HTTP."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from ._cli_commands import _connection, _UsageError

__all__ = ["add_mcp_command"]

MCP_EXTRA_HINT = "pip install 'stepfun-openai[mcp]'"


def add_mcp_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "mcp",
        help="serve StepFun image tools to MCP hosts (Claude, Cursor, Codex, ...)",
        description=(
            "An MCP server with generate_image, image_to_image, edit_image, list_models and account_balance. "
            "Over stdio by default (what hosts launch); --http serves Streamable HTTP on 127.0.0.1. "
            f"Needs the mcp extra: {MCP_EXTRA_HINT}. The key comes from STEPFUN_API_KEY (or STEP_API_KEY)."
        ),
    )
    parser.add_argument("--http", action="store_true", help="serve Streamable HTTP on http://127.0.0.1:PORT/mcp")
    parser.add_argument("--port", type=int, default=8000, help="the HTTP port (default 8000; 0 picks a free one)")
    parser.add_argument(
        "--out", metavar="DIR", help="where images are saved (default: ~/.local/share/stepfun-openai/mcp)"
    )
    parser.add_argument(
        "--allow-dir",
        metavar="DIR",
        action="append",
        default=[],
        help="a directory whose image files the tools may read (repeatable); the client's roots are allowed too",
    )
    parser.add_argument("--no-roots", action="store_true", help="ignore the client's roots; only --allow-dir")
    parser.add_argument(
        "--emulator",
        action="store_true",
        help="use a local in-process emulator (no key needed, nothing billed)",
    )
    parser.add_argument("--base-url", help="the API base URL (default: STEPFUN_BASE_URL or StepFun's)")
    parser.add_argument("--region", choices=("mainland", "international"), help="whose prices apply (see generate)")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        from .mcp_server import StepFunMCP, default_output_dir
    except ImportError as exc:
        print(f"stepfun-openai: error: {exc}", file=sys.stderr)
        return 2
    import anyio

    from ._client import AsyncStepFun, MissingAPIKeyError
    from ._exceptions import StepFunValidationError

    if args.http and not 0 <= args.port <= 65535:
        print(f"stepfun-openai: error: --port {args.port}: a port in 0..65535", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        try:  # the CLI's one way to the key, the emulator, --base-url and --region
            settings = stack.enter_context(_connection(args))
        except _UsageError as exc:
            print(f"stepfun-openai: error: {exc}", file=sys.stderr)
            return 2
        try:
            client = AsyncStepFun(**settings)
            server = StepFunMCP(
                client,
                output_dir=args.out if args.out else default_output_dir(),
                allow_dirs=args.allow_dir,
                use_roots=not args.no_roots,
            )
        except StepFunValidationError as exc:  # only --allow-dir can be wrong here
            print(f"stepfun-openai: error: --allow-dir {exc.value}: not an existing directory", file=sys.stderr)
            return 2
        except MissingAPIKeyError as exc:
            hint = "" if args.emulator else " (or add --emulator to try a local emulator)"
            print(f"stepfun-openai: error: {' '.join(str(exc).split())}{hint}", file=sys.stderr)
            return 2
        try:
            if args.http:

                def ready(port: int) -> None:
                    print(f"stepfun-openai: MCP server on http://127.0.0.1:{port}/mcp", file=sys.stderr, flush=True)

                anyio.run(lambda: server.run_http(port=args.port, ready=ready))
            else:
                anyio.run(server.run_stdio)
        except KeyboardInterrupt:
            pass
        except OSError as exc:
            print(f"stepfun-openai: error: {exc.strerror or exc}", file=sys.stderr)
            return 1
    return 0
