"""``python -m stepfun_openai.emulator`` (also ``stepfun-openai emulator``): run the emulator."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType

from .. import catalog
from . import FAULT_KINDS, MAX_CONNECTIONS, READ_TIMEOUT, Emulator, parse_faults

__all__ = ["add_emulator_arguments", "main", "run_from_args"]


def _words(text: str) -> list[str]:
    return [word.strip() for word in text.split(",") if word.strip()]


def _faults(text: str) -> str:
    try:
        parse_faults(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _positive(kind: type[float] | type[int]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
        return value

    return parse


def add_emulator_arguments(parser: argparse.ArgumentParser) -> None:
    """The emulator's flags, for ``python -m`` and for the package CLI's ``emulator`` subcommand."""
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    server.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one (default: %(default)s)")
    server.add_argument("--api-key", help="accept only this bearer key (default: any non-empty key)")
    server.add_argument("--url-ttl", type=int, default=3600, help="lifetime of image URLs in seconds (default: 3600)")
    server.add_argument(
        "--read-timeout",
        type=_positive(float),
        default=READ_TIMEOUT,
        metavar="SECONDS",
        help="a client's time to send a request's head, then its body; idle connections close after it "
        "(default: %(default)g)",
    )
    server.add_argument(
        "--max-connections",
        type=_positive(int),
        default=MAX_CONNECTIONS,
        metavar="N",
        help="connections served at once; one more gets 503 (default: %(default)s)",
    )
    server.add_argument("--verbose", action="store_true", help="log every request to stderr")

    limits = parser.add_argument_group("generation time and rate limits (default: none)")
    limits.add_argument("--latency", type=float, default=0.0, metavar="SECONDS", help="hold each image request")
    limits.add_argument("--tier", choices=list(catalog.RATE_LIMIT_TIERS), help="a StepFun account tier's limits")
    limits.add_argument("--rpm", type=int, help="requests per minute (overrides the tier's)")
    limits.add_argument("--concurrency", type=int, help="concurrent requests (overrides the tier's)")
    limits.add_argument(
        "--retry-after", type=float, metavar="SECONDS", help="send Retry-After on 429 and 503 (default: not sent)"
    )

    faults = parser.add_argument_group("faults")
    faults.add_argument(
        "--faults",
        type=_faults,
        default="",
        metavar="KIND=P,...",
        help=f"random faults with probabilities, e.g. 503=0.1,reset=0.02; kinds: {', '.join(FAULT_KINDS)}",
    )
    faults.add_argument("--fault-seed", type=int, help="seed for reproducible faults")
    faults.add_argument(
        "--slow-seconds", type=float, default=30.0, help="delay of the 'slow' fault (default: %(default)s)"
    )

    account = parser.add_argument_group("account")
    account.add_argument(
        "--balance",
        metavar="AMOUNT",
        help="the account's balance, lowered by each image at the catalog's price; 402 once it would "
        "go below zero (default: unlimited)",
    )
    account.add_argument(
        "--region",
        choices=["mainland", "international"],
        default="mainland",
        help="whose prices are charged: yuan or dollars (default: %(default)s)",
    )

    moderation = parser.add_argument_group("moderation")
    moderation.add_argument(
        "--block-words", type=_words, default=[], metavar="W1,W2", help="prompts with these get 451"
    )
    moderation.add_argument(
        "--filter-words",
        type=_words,
        default=[],
        metavar="W1,W2",
        help="prompts with these get finish_reason content_filtered",
    )


def emulator_from_args(args: argparse.Namespace) -> Emulator:
    return Emulator(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        latency=args.latency,
        tier=args.tier,
        rpm=args.rpm,
        concurrency=args.concurrency,
        retry_after=args.retry_after,
        faults=args.faults,
        fault_seed=args.fault_seed,
        slow_seconds=args.slow_seconds,
        url_ttl=args.url_ttl,
        block_words=args.block_words,
        filter_words=args.filter_words,
        balance=args.balance,
        region=args.region,
        read_timeout=args.read_timeout,
        max_connections=args.max_connections,
        verbose=args.verbose,
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; returns the exit code (0)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with emulator_from_args(args) as emulator:
            # Scripts wait for this exact first line to learn the port.
            print(f"listening on {emulator.base_url}", flush=True)
            while not stop.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stepfun_openai.emulator",
        description="A local StepFun image API for tests and demos (docs/guides/emulator.md: 'The local emulator').",
    )
    add_emulator_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_from_args(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
