"""Peak traced memory (tracemalloc) of sending a ~10 MB PNG source, against the emulator.

The emulator runs in a subprocess so that only the client's allocations are traced. Compared in
one process, each call measured the same way:

- guide: the seed guide's way: read the file, ``base64.b64encode(...).decode()``, pass it in
  ``extra_body`` of ``openai.OpenAI().images.generate`` (``source_image``);
- before: this client with inline images encoded to a ``str`` and serialised by the SDK (the
  path before the raw-body change, reproduced by patching ``_requests._encode``);
- ours: ``StepFun().images.generate(source_image=Path)`` and ``image2image(source_url=Path)``.

Run: ``python benchmarks/bench_memory.py`` (about 10 s). Prints a table; the goal is ours <= 0.6x guide.
"""

from __future__ import annotations

import base64
import gc
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai

from stepfun_openai import StepFun, _requests
from stepfun_openai._inputs import EncodedImage, encode_inline

SIDE = 1800  # 1800x1800 RGB noise: about 9.7 MB, just under StepFun's 10 MB limit
ROUNDS = 3


def noise_png(path: Path, side: int = SIDE) -> int:
    """An incompressible PNG (random pixels, stored without compression), written in rows."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + os.urandom(side * 3) for _ in range(side))
    idat = zlib.compress(rows, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
    data += chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    path.write_bytes(data)
    return len(data)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_emulator() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "stepfun_openai.emulator", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/images/generations", timeout=1)
        except urllib.error.HTTPError:
            return process, base_url  # it answers (405/401): up
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the emulator did not start")


def peak(call: Callable[[], Any]) -> int:
    """Peak traced bytes during ``call`` (best of ROUNDS: the least noise from the allocator)."""
    best = None
    for _ in range(ROUNDS):
        gc.collect()
        tracemalloc.start()
        tracemalloc.reset_peak()
        call()
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        best = top if best is None else min(best, top)
    assert best is not None
    return best


def main() -> None:
    workdir = Path(tempfile.mkdtemp())
    source = workdir / "source.png"
    size = noise_png(source)
    process, base_url = start_emulator()
    try:
        plain = openai.OpenAI(api_key="bench", base_url=base_url, max_retries=0)
        ours = StepFun(api_key="bench", base_url=base_url, max_retries=0)
        common: dict[str, Any] = {"model": "step-2x-large", "prompt": "a cat", "size": "256x256"}

        def guide() -> None:
            with open(source, "rb") as handle:
                b64 = base64.b64encode(handle.read()).decode("utf-8")
            plain.images.generate(**common, extra_body={"seed": 7, "source_image": b64, "source_weight": 0.5})

        def ours_generate() -> None:
            ours.images.generate(**common, seed=7, source_image=source, source_weight=0.5)

        def ours_image2image() -> None:
            ours.images.image2image(**common, seed=7, source_url=source, source_weight=0.5)

        def before() -> None:
            original = _requests.encode_inline

            def as_text(value: Any, **kwargs: Any) -> Any:
                kwargs.pop("fit", None)
                encoded = original(value, **kwargs)
                if isinstance(encoded, EncodedImage):
                    return encoded
                text = encoded.text()
                return EncodedImage(text=text, info=encoded.info, nbytes=encoded.nbytes)

            _requests.encode_inline = as_text  # type: ignore[assignment]
            try:
                ours.images.generate(**common, seed=7, source_image=source, source_weight=0.5)
            finally:
                _requests.encode_inline = original

        assert encode_inline is _requests.encode_inline
        results = {
            "guide (read, b64encode().decode(), extra_body)": peak(guide),
            "before (str payload, SDK serialises)": peak(before),
            "ours: generate(source_image=Path)": peak(ours_generate),
            "ours: image2image(source_url=Path)": peak(ours_image2image),
        }
    finally:
        process.terminate()
        process.wait(10)
    baseline = results["guide (read, b64encode().decode(), extra_body)"]
    print(f"source: {size / 1e6:.1f} MB PNG ({SIDE}x{SIDE}), base64 {4 * ((size + 2) // 3) / 1e6:.1f} MB")
    print(f"{'call':48} {'peak MB':>8} {'x guide':>8}")
    for name, value in results.items():
        print(f"{name:48} {value / 1e6:8.1f} {value / baseline:8.2f}")


if __name__ == "__main__":
    main()
