"""Issue 2 benchmarks: per-call overhead of StepFun over plain openai, and import time.

    python benchmarks/bench_client.py [--calls 300] [--rounds 7] [--imports 15]

1. ``StepFun().images.generate(typed args)`` vs ``openai.OpenAI().images.generate(extra_body=...)``
   against the same local server (a minimal stdlib server answering a fixed, contract-shaped
   body, so the client's own cost is as visible as it can be), same process, interleaved rounds.
   Goal: ratio <= 1.05.
2. ``python -c "import stepfun_openai"`` vs ``python -c "import openai"`` in fresh processes,
   interleaved. Goal: ratio <= 1.10.
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
    ratios = []
    per_call_ours = []
    per_call_plain = []
    for _ in range(rounds):
        timings = {}
        for name, fn in (("plain", run_plain), ("ours", run_ours)):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            timings[name] = (time.perf_counter() - start) / calls
        ratios.append(timings["ours"] / timings["plain"])
        per_call_ours.append(timings["ours"])
        per_call_plain.append(timings["plain"])
    server.shutdown()
    return {
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "ours_ms": statistics.median(per_call_ours) * 1000,
        "plain_ms": statistics.median(per_call_plain) * 1000,
    }


def import_time(repeats: int) -> dict[str, float]:
    def once(module: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
        return time.perf_counter() - start

    ours, plain = [], []
    once("stepfun_openai")
    once("openai")
    for _ in range(repeats):
        plain.append(once("openai"))
        ours.append(once("stepfun_openai"))
    return {
        "ratio_median": statistics.median(ours) / statistics.median(plain),
        "ours_ms": statistics.median(ours) * 1000,
        "plain_ms": statistics.median(plain) * 1000,
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
        f"import: stepfun_openai {imports['ours_ms']:.1f} ms, openai {imports['plain_ms']:.1f} ms; "
        f"ratio {imports['ratio_median']:.3f}; goal <= 1.10"
    )


if __name__ == "__main__":
    main()
