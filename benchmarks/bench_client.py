"""Issue 2 benchmarks: per-call overhead of StepFun over plain openai, and import time.

    python benchmarks/bench_client.py [--calls 300] [--rounds 7] [--imports 15]

1. ``StepFun().images.generate(typed args)`` vs ``openai.OpenAI().images.generate(extra_body=...)``
   against the same local server (a minimal stdlib server answering a fixed, contract-shaped
   body, so the client's own cost is as visible as it can be), same process, interleaved call by call.
   Goal: ratio <= 1.05.
2. ``python -c "import stepfun_openai"`` vs ``python -c "import openai"`` in fresh processes,
   interleaved (goal: ratio <= 1.10); and, since the package loads its modules lazily, the
   meaningful twin: ``from stepfun_openai import StepFun`` vs ``from openai import OpenAI``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai

from stepfun_openai import StepFun

BODY = json.dumps(
    {
        "id": "bench",
        "created": 1723595647,
        "data": [
            {
                "url": "http://127.0.0.1/image_gen/20250919/x.png?X-Tos-Date=20250919T093128Z&X-Tos-Expires=3600",
                "finish_reason": "success",
                "seed": 1234,
            }
        ],
    }
).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.send_header("X-Trace-Id", "bench-trace")
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


def per_call(calls: int, rounds: int) -> dict[str, float]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    ours = StepFun(api_key="sk-bench", base_url=base_url)
    plain = openai.OpenAI(api_key="sk-bench", base_url=base_url, max_retries=0)

    def run_ours() -> None:
        ours.images.generate(
            model="step-2x-large", prompt="a lighthouse", size="512x512", steps=30, cfg_scale=6.0, seed=1234
        )

    def run_plain() -> None:
        plain.images.generate(
            model="step-2x-large",
            prompt="a lighthouse",
            size="512x512",
            extra_body={"steps": 30, "cfg_scale": 6.0, "seed": 1234},
        )

    for fn in (run_ours, run_plain):  # warm up connections and imports
        for _ in range(20):
            fn()
    # Interleaved call by call (ABAB...), so a noisy neighbour slows both sides alike.
    ratios = []
    per_call_ours = []
    per_call_plain = []
    for _ in range(rounds):
        spent = {"plain": 0.0, "ours": 0.0}
        for _ in range(calls):
            for name, fn in (("plain", run_plain), ("ours", run_ours)):
                start = time.perf_counter()
                fn()
                spent[name] += time.perf_counter() - start
        ratios.append(spent["ours"] / spent["plain"])
        per_call_ours.append(spent["ours"] / calls)
        per_call_plain.append(spent["plain"] / calls)
    server.shutdown()
    return {
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "ours_ms": statistics.median(per_call_ours) * 1000,
        "plain_ms": statistics.median(per_call_plain) * 1000,
    }


def import_time(repeats: int) -> dict[str, float]:
    """Fresh processes, interleaved: the package alone, and the client class against openai's."""

    def once(statement: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", statement], check=True)
        return time.perf_counter() - start

    cases = {
        "import openai": "import openai",
        "import stepfun_openai": "import stepfun_openai",
        "from openai import OpenAI": "from openai import OpenAI",
        "from stepfun_openai import StepFun": "from stepfun_openai import StepFun",
    }
    for statement in cases.values():
        once(statement)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, statement in cases.items():
            times[name].append(once(statement))
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    return {
        **medians,
        "ratio_package": medians["import stepfun_openai"] / medians["import openai"],
        "ratio_client": medians["from stepfun_openai import StepFun"] / medians["from openai import OpenAI"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--imports", type=int, default=15)
    args = parser.parse_args()
    calls = per_call(args.calls, args.rounds)
    print(
        f"per-call: StepFun {calls['ours_ms']:.3f} ms, openai {calls['plain_ms']:.3f} ms; "
        f"ratio median {calls['ratio_median']:.3f} (min {calls['ratio_min']:.3f}, max {calls['ratio_max']:.3f}); "
        "goal <= 1.05"
    )
    imports = import_time(args.imports)
    print(
        f"import: `import stepfun_openai` {imports['import stepfun_openai']:.1f} ms vs `import openai` "
        f"{imports['import openai']:.1f} ms, ratio {imports['ratio_package']:.3f}; "
        f"`from stepfun_openai import StepFun` {imports['from stepfun_openai import StepFun']:.1f} ms vs "
        f"`from openai import OpenAI` {imports['from openai import OpenAI']:.1f} ms, ratio "
        f"{imports['ratio_client']:.3f}; goal <= 1.10"
    )


if __name__ == "__main__":
    main()
