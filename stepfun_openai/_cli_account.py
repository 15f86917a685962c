"""The ``balance`` and ``doctor`` subcommands: the account behind the key, and whether the setup works.

``doctor`` never prints the key, only which variable it came from. Its exit code is 0 only when
every check passes.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from . import catalog
from ._cli_commands import EXIT_FAILED, EXIT_OK, _add_connection, _connection, _guarded

__all__ = ["add_account_commands"]


def add_account_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "balance",
        help="the account's balance (GET /v1/accounts)",
        description="The balance of the account behind the key, in its currency (yuan on the mainland host).",
    )
    _add_connection(parser)
    parser.set_defaults(handler=_guarded(_balance))
    parser = subparsers.add_parser(
        "doctor",
        help="check the key, the base URL, the balance and the models the host serves",
        description=(
            "Check the setup: which key variable is used (never the key), the base URL and whether it "
            "answers, whether the key is accepted, the balance, and which models the host is documented "
            "to serve. Exit code 0 only when everything is fine."
        ),
    )
    _add_connection(parser)
    parser.set_defaults(handler=_guarded(_doctor))


def _balance(args: argparse.Namespace) -> int:
    from ._client import StepFun

    with _connection(args) as connection, StepFun(**connection) as client:
        account = client.with_options(max_retries=2).account.retrieve()
    kind = account.type or "unknown"
    print(
        f"balance: {account.balance} ({kind} account; cash {account.total_cash_balance}, "
        f"vouchers {account.total_voucher_balance})"
    )
    if not account.prepaid:
        print("a postpaid account is billed afterwards: its balance does not limit spending")
    return EXIT_OK


def _doctor(args: argparse.Namespace) -> int:
    import openai

    from ._client import API_KEY_ENV_VARS, StepFun

    problems = 0

    def report(ok: bool | None, what: str) -> None:
        nonlocal problems
        mark = {True: "ok  ", False: "FAIL", None: "note"}[ok]
        problems += ok is False
        print(f"{mark} {what}")

    if args.emulator:
        report(True, "key: the in-process emulator's (--emulator)")
    else:
        used = next((name for name in API_KEY_ENV_VARS if os.environ.get(name)), None)
        report(used is not None, f"key: from ${used}" if used else f"key: none of {', '.join(API_KEY_ENV_VARS)} is set")
        if used is None:
            return EXIT_FAILED
    with _connection(args) as connection, StepFun(**connection) as client:
        base_url = str(client.base_url)
        host = catalog.host_of(base_url)
        where = (
            f"StepFun {host.region}" + (" Step Plan" if host.step_plan else "") if host.region else "not a StepFun host"
        )
        report(None, f"base URL: {base_url} ({where})")
        account = None
        try:
            account = client.with_options(max_retries=0, timeout=20).account.retrieve()
        except openai.AuthenticationError:
            report(True, "the base URL answers")
            report(False, "the key is refused (401): check it is this region's key")
        except openai.APIStatusError as exc:
            report(True, f"the base URL answers (HTTP {exc.status_code} for /accounts)")
            report(None, "the key could not be checked: this host has no balance endpoint")
        except openai.APIConnectionError as exc:
            report(False, f"the base URL does not answer: {exc}")
        else:
            report(True, "the base URL answers")
            report(True, "the key is accepted")
        if account is not None:
            if account.prepaid:
                funded = account.balance is not None and account.balance > 0
                report(funded, f"balance: {account.balance} (prepaid)" + ("" if funded else ": top up to generate"))
            else:
                report(True, f"balance: {account.balance} (postpaid: billed afterwards)")
        documented = [
            f"{name} ({', '.join(e for e in model.endpoints if catalog.documented_on(host, name, e))})"
            for name, model in catalog.MODELS.items()
            if any(catalog.documented_on(host, name, e) for e in model.endpoints)
        ]
        report(None, "models documented for this host: " + "; ".join(documented))
    return EXIT_OK if problems == 0 else EXIT_FAILED
