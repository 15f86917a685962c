"""The emulator and the client are separate rooms: neither imports the other, and what they share
(the catalog, format sniffing, the PNG codec) needs nothing beyond the standard library."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_the_emulator_runs_on_the_standard_library_alone() -> None:
    out = _run(
        "import sys\n"
        "from stepfun_openai.emulator import Emulator\n"
        "with Emulator() as emu:\n"
        "    assert emu.base_url.endswith('/v1')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('openai', 'httpx2', 'pydantic', 'tenacity')"
        " or m == 'stepfun_openai._client'))"
    )
    assert out == "[]"


def test_the_client_never_imports_the_emulator() -> None:
    out = _run(
        "import sys, httpx2\n"
        "from stepfun_openai import StepFun\n"
        "def answer(request):\n"
        "    return httpx2.Response(200, json={'data': [{'url': 'https://x/y.png', 'seed': 1}]})\n"
        "client = StepFun(api_key='k', http_client=httpx2.Client(transport=httpx2.MockTransport(answer)))\n"
        "client.images.generate(model='step-2x-large', prompt='a fox', seed=1)\n"
        "print([m for m in sys.modules if m.startswith('stepfun_openai.emulator')])"
    )
    assert out == "[]"


@pytest.mark.parametrize("module", ["stepfun_openai.catalog", "stepfun_openai._sniff", "stepfun_openai._png"])
def test_the_modules_the_emulator_shares_need_only_the_standard_library(module: str) -> None:
    out = _run(
        "import sys\n"
        "before = set(sys.modules)\n"
        f"import {module}\n"
        "new = set(sys.modules) - before\n"
        "print(sorted(m for m in new if m.split('.')[0] not in sys.stdlib_module_names"
        f" and m not in ('stepfun_openai', {module!r})))"
    )
    assert out == "[]"
