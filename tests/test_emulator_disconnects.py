"""A client that hangs up mid-response leaves no traceback on the emulator's stderr; bugs still do."""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Callable

import pytest

from stepfun_openai.emulator import Emulator
from stepfun_openai.emulator._server import EmulatorConfig, make_server

Factory = Callable[..., Emulator]


def hang_up_with_a_reset(emu: Emulator) -> None:
    """Ask for a slow image, then drop the connection (RST) before the answer comes."""
    body = json.dumps({"model": "step-2x-large", "prompt": "a lighthouse", "size": "256x256"}).encode()
    request = (
        f"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer sk-test\r\n"
        f"Content-Type: application/json\r\nX-Emulator-Fault: slow\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", emu.port)) as conn:
        conn.sendall(request)
        time.sleep(0.05)  # the request is in
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_a_client_hanging_up_mid_request_prints_no_traceback(
    stepfun_emulator_factory: Factory, capfd: pytest.CaptureFixture[str]
) -> None:
    emu = stepfun_emulator_factory(slow_seconds=0.2)
    hang_up_with_a_reset(emu)
    deadline = time.monotonic() + 5
    while (not emu.requests() or emu.stats()["in_flight"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # the handler thread has written into the closed connection and ended

    assert emu.requests()[0]["fault"] == "slow"
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("error", [BrokenPipeError(32, "Broken pipe"), ConnectionResetError(104, "reset")])
def test_disconnects_are_silent(error: OSError, capfd: pytest.CaptureFixture[str]) -> None:
    server = make_server(EmulatorConfig())
    try:
        try:
            raise error
        except OSError:
            server.handle_error(None, ("127.0.0.1", 1))  # type: ignore[arg-type]
    finally:
        server.server_close()
    assert capfd.readouterr().err == ""


def test_other_errors_keep_their_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    server = make_server(EmulatorConfig())
    try:
        try:
            raise RuntimeError("a bug in the emulator")
        except RuntimeError:
            server.handle_error(None, ("127.0.0.1", 1))  # type: ignore[arg-type]
    finally:
        server.server_close()
    err = capfd.readouterr().err
    assert "Traceback" in err and "RuntimeError: a bug in the emulator" in err
