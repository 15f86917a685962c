"""The emulator as a server among hostile clients: bodies of any framing stay under the cap, every
malformed request gets an answer, slow and idle clients are dropped, and the loopback fetch of a
source image stays on this machine, in bounded time and size.

Raw sockets on 127.0.0.1, each with a hard timeout, so a broken bound fails a test instead of
hanging the suite; the 500 MB bodies are sent to an emulator in a child capped in memory.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import NamedTuple

import pytest

from stepfun_openai.emulator import Emulator, _params
from stepfun_openai.emulator.__main__ import build_parser, emulator_from_args
from stepfun_openai.emulator._server import EmulatorState

from ._emulator_helpers import KEY, generate, make_png
from ._hostile import answer, hostile_server, run_bounded, trickle_body, trickle_headers, within

GENERATIONS = "/v1/images/generations"
BODY = json.dumps({"model": "step-2x-large", "prompt": "a lighthouse", "size": "256x256"}).encode()


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def quick() -> Iterator[Emulator]:
    """An emulator that gives a client half a second to send a request's head, then its body."""
    with Emulator(read_timeout=0.5) as emulator:
        yield emulator


class Reply(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, str]:
        error: dict[str, str] = json.loads(self.body)["error"]
        return error


def head(path: str = GENERATIONS, *lines: str, method: str = "POST", auth: bool = True) -> bytes:
    """A request head: the request line, ``Host``, a bearer key (unless ``auth=False``), ``lines``."""
    fields = ["Host: 127.0.0.1", *([f"Authorization: Bearer {KEY}"] if auth else []), *lines]
    text = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{field}\r\n" for field in fields) + "\r\n"
    return text.encode("latin-1")  # one byte a character, as on the wire


def json_request(body: bytes = BODY, *lines: str, path: str = GENERATIONS) -> bytes:
    return head(path, "Content-Type: application/json", f"Content-Length: {len(body)}", *lines) + body


def connect(emu: Emulator, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", emu.port), timeout=timeout)


def read_reply(sock: socket.socket) -> Reply:
    """One response (a ``100 Continue`` is returned like any other); raises on EOF before its end."""
    data = b""
    while b"\r\n\r\n" not in data:
        got = sock.recv(65536)
        if not got:
            raise ConnectionError(f"the server closed the connection without an answer (after {data!r})")
        data += got
    head_bytes, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        got = sock.recv(65536)
        if not got:
            raise ConnectionError("the server closed the connection inside a response body")
        rest += got
    return Reply(int(status_line.split()[1]), headers, rest[:length])


def ask(emu: Emulator, data: bytes) -> Reply:
    """Send ``data`` on a new connection and read one response, all within 10 s."""

    def run() -> Reply:
        with connect(emu) as sock:
            sock.sendall(data)
            return read_reply(sock)

    return within(10, run)


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed its side (EOF or a reset); waits at most the socket's timeout."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


# --- 1. the body cap under every framing -----------------------------------------------------------------------------


def test_a_content_length_over_the_cap_is_413_before_a_byte_of_body_is_read(emu: Emulator) -> None:
    # 100 MB declared, nothing sent: the answer cannot wait for the body.
    reply = ask(emu, head(GENERATIONS, "Content-Type: application/json", f"Content-Length: {100 * 1024 * 1024}"))
    assert reply.status == 413
    assert reply.error()["type"] == "request_too_large"
    assert reply.headers["connection"] == "close"


def test_expect_100_continue_gets_the_413_instead_of_the_continue(emu: Emulator) -> None:
    too_big = head(GENERATIONS, f"Content-Length: {100 * 1024 * 1024}", "Expect: 100-continue")
    assert ask(emu, too_big).status == 413

    def fits() -> tuple[int, int]:
        with connect(emu) as sock:
            lines = ("Content-Type: application/json", f"Content-Length: {len(BODY)}", "Expect: 100-continue")
            sock.sendall(head(GENERATIONS, *lines))
            interim = read_reply(sock).status
            sock.sendall(BODY)
            return interim, read_reply(sock).status

    assert within(20, fits) == (100, 200)


def test_a_chunked_body_is_decoded_and_its_total_capped(emu: Emulator) -> None:
    chunked = b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (BODY[:10], BODY[10:])) + b"0\r\n\r\n"
    reply = ask(emu, head(GENERATIONS, "Content-Type: application/json", "Transfer-Encoding: chunked") + chunked)
    assert reply.status == 200

    small = Emulator(max_body_bytes=1000)
    with small:
        block = b"x" * 600
        over = head(GENERATIONS, "Transfer-Encoding: chunked") + (b"258\r\n" + block + b"\r\n") * 2 + b"0\r\n\r\n"
        assert ask(small, over).status == 413


def test_a_chunk_larger_than_the_cap_is_refused_before_it_is_read(emu: Emulator) -> None:
    # A 256 MB chunk announced and never sent: 413 at once, not a wait for (or a buffer of) 256 MB.
    reply = ask(emu, head(GENERATIONS, "Transfer-Encoding: chunked") + b"10000000\r\n" + b"{" * 100)
    assert reply.status == 413


@pytest.mark.parametrize(
    ("chunks", "why"),
    [
        (b"zz\r\n{}\r\n0\r\n\r\n", "hexadecimal"),
        (b"2\r\n{}XX0\r\n\r\n", "CRLF"),
        (b"2;" + b"x" * 5000 + b"\r\n{}\r\n0\r\n\r\n", "longer than"),
    ],
)
def test_broken_chunks_are_400(emu: Emulator, chunks: bytes, why: str) -> None:
    reply = ask(emu, head(GENERATIONS, "Transfer-Encoding: chunked") + chunks)
    assert reply.status == 400
    assert why in reply.error()["message"]


def test_an_unknown_transfer_coding_is_501_and_two_framings_are_400(emu: Emulator) -> None:
    gzip = ask(emu, head(GENERATIONS, "Transfer-Encoding: gzip, chunked") + b"0\r\n\r\n")
    assert gzip.status == 501
    assert "gzip" in gzip.error()["message"]
    both = ask(emu, head(GENERATIONS, "Transfer-Encoding: chunked", "Content-Length: 5") + b"0\r\n\r\n")
    assert both.status == 400
    assert "ambiguous" in both.error()["message"]


def test_a_body_without_a_length_is_411(emu: Emulator) -> None:
    reply = ask(emu, head(GENERATIONS, "Content-Type: application/json") + BODY)
    assert reply.status == 411
    assert reply.error()["type"] == "length_required"
    assert reply.headers["connection"] == "close"


@pytest.mark.parametrize("value", ["-1", "abc", "1_0", "+5", "0x10", "1e3", "\u00b2"])
def test_a_content_length_that_is_not_a_decimal_integer_is_400(emu: Emulator, value: str) -> None:
    reply = ask(emu, head(GENERATIONS, "Content-Type: application/json", f"Content-Length: {value}") + BODY)
    assert reply.status == 400
    assert "Content-Length" in reply.error()["message"]


def test_two_different_content_lengths_are_400(emu: Emulator) -> None:
    lines = ("Content-Type: application/json", f"Content-Length: {len(BODY)}", "Content-Length: 3")
    assert ask(emu, head(GENERATIONS, *lines) + BODY).status == 400


def test_a_body_shorter_than_its_length_times_out_with_408(quick: Emulator) -> None:
    def run() -> tuple[Reply, float]:
        with connect(quick) as sock:
            started = time.monotonic()
            sock.sendall(head(GENERATIONS, "Content-Type: application/json", "Content-Length: 100") + b"{}")
            reply = read_reply(sock)
            return reply, time.monotonic() - started

    reply, waited = within(10, run)
    assert reply.status == 408
    assert reply.error()["type"] == "request_timeout"
    assert 0.4 < waited < 5


_FIVE_HUNDRED_MB = r"""
import json, resource, socket, threading
from stepfun_openai.emulator import Emulator

TOTAL = 500 * 1024 * 1024
BLOCK = b"A" * (1 << 20)
HEAD = "POST /v1/images/generations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n"

def raw():
    for _ in range(TOTAL >> 20):
        yield BLOCK

def chunks():
    for _ in range(TOTAL >> 20):
        yield b"100000\r\n" + BLOCK + b"\r\n"

def one_chunk():
    yield b"%x\r\n" % TOTAL
    yield from raw()

def attempt(port, head, body):
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall((HEAD + head + "\r\n").encode())
    def send():
        try:
            for block in body:
                sock.sendall(block)
        except OSError:
            pass
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    data = b""
    try:
        while b"\r\n" not in data:
            got = sock.recv(65536)
            if not got:
                break
            data += got
    except OSError as exc:
        data += repr(exc).encode()
    try:
        sock.shutdown(socket.SHUT_RDWR)  # stops the sender
    except OSError:
        pass  # already reset by the server
    sender.join(30)
    sock.close()
    return data.split(b"\r\n")[0].decode("latin-1")

with Emulator() as emu:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results = {
        "content-length": attempt(emu.port, f"Content-Length: {TOTAL}\r\n", raw()),
        "chunked": attempt(emu.port, "Transfer-Encoding: chunked\r\n", chunks()),
        "one chunk": attempt(emu.port, "Transfer-Encoding: chunked\r\n", one_chunk()),
        "lying length": attempt(emu.port, "Content-Length: 100\r\n", raw()),
        "no length": attempt(emu.port, "", raw()),
    }
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"results": results, "grown_mb": grown_mb}))
"""


def test_500_mb_bodies_under_every_framing_are_answered_without_being_buffered() -> None:
    # The child's address space is capped: a body buffered whole would be a MemoryError there.
    done = run_bounded(_FIVE_HUNDRED_MB, seconds=120, memory_mb=900, env={"MALLOC_ARENA_MAX": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout)
    assert {framing: line[:12] for framing, line in outcome["results"].items()} == {
        "content-length": "HTTP/1.1 413",
        "chunked": "HTTP/1.1 413",
        "one chunk": "HTTP/1.1 413",
        "lying length": "HTTP/1.1 400",  # 100 bytes of "A" are not JSON; the rest is refused as the next request
        "no length": "HTTP/1.1 411",
    }, outcome
    assert outcome["grown_mb"] < 100, outcome  # the cap is 20 MB; nothing near 500 MB was held


# --- 2. malformed requests get an answer -------------------------------------------------------------------------


def test_blank_lines_before_a_request_are_skipped(emu: Emulator) -> None:
    reply = ask(emu, b"\r\n\r\n" + head("/_emulator/stats", method="GET"))
    assert reply.status == 200


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"HELLO\r\n\r\n", id="bad request line"),
        pytest.param(b"GET / HTTP/9.x\r\n\r\n", id="bad version"),
        pytest.param(b"\r\n" * 20 + b"GET / HTTP/1.1\r\n\r\n", id="endless blank lines"),
        pytest.param(head(GENERATIONS, "no colon here", f"Content-Length: {len(BODY)}") + BODY, id="no colon"),
        pytest.param(b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", id="request line too long"),
        pytest.param(head("/", "X: " + "a" * 70000, method="GET"), id="header too long"),
    ],
)
def test_a_malformed_head_gets_an_error_answer(emu: Emulator, request_bytes: bytes) -> None:
    reply = ask(emu, request_bytes)
    assert 400 <= reply.status < 500


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(b'{"model": "step-2x-large", ', "application/json", id="invalid JSON"),
        pytest.param(b"[1, 2]", "application/json", id="a JSON array"),
        pytest.param(b'"a string"', "application/json", id="a JSON string"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "application/json", id="nested 100000 deep"),
        pytest.param(
            b'{"model": "step-2x-large", "prompt": "\\ud800", "size": "256x256"}',
            "application/json",
            id="a lone surrogate",
        ),
        pytest.param(b"\xff\xfe{}", "application/json", id="not UTF-8"),
        pytest.param(BODY, "text/plain", id="JSON sent as text/plain"),
        pytest.param(BODY, "application/x-www-form-urlencoded", id="JSON sent as a form (curl -d)"),
    ],
)
def test_a_malformed_json_request_is_400_naming_what_is_wrong(emu: Emulator, body: bytes, content_type: str) -> None:
    reply = ask(emu, head(GENERATIONS, f"Content-Type: {content_type}", f"Content-Length: {len(body)}") + body)
    assert reply.status == 400
    error = reply.error()
    assert error["type"] == "input_invalid"
    expected = "Content-Type" if body == BODY else "body"
    assert error["message"].startswith(f"Request param: {expected} is invalid, recommended val is: ")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(b"--zz\r\nabcd", "multipart/form-data; boundary=zz", id="no closing boundary"),
        pytest.param(b"--zz\r\nno blank line--zz--\r\n", "multipart/form-data; boundary=zz", id="part without head"),
        pytest.param(b"anything", "multipart/form-data", id="no boundary"),
        pytest.param(
            b'--zz\r\nContent-Disposition: form-data; name="prompt"\r\n\r\np\r\n--zz--\r\n',
            "multipart/form-data; boundary=zz",
            id="no image part",
        ),
        pytest.param(b"{}", "image/png", id="wrong content type"),
    ],
)
def test_a_broken_edit_upload_is_400(emu: Emulator, body: bytes, content_type: str) -> None:
    path = "/v1/images/edits"
    reply = ask(emu, head(path, f"Content-Type: {content_type}", f"Content-Length: {len(body)}") + body)
    assert reply.status == 400
    assert reply.error()["type"] == "input_invalid"


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer",
        "Bearer ",
        "Basic sk-right",
        "Bearer sk-wrong",
        "Bearer sk-right\xe9",
        "Bearer \xff\xfe",
        "sk-right",
    ],
)
def test_a_bad_or_missing_key_is_401_when_a_key_is_set(authorization: str | None) -> None:
    lines = [] if authorization is None else [f"Authorization: {authorization}"]
    request = head(GENERATIONS, *lines, "Content-Type: application/json", f"Content-Length: {len(BODY)}", auth=False)
    with Emulator(api_key="sk-right") as strict:
        reply = ask(strict, request + BODY)
        assert reply.status == 401
        assert reply.error()["type"] == "invalid_api_key"
        good = head(
            GENERATIONS,
            "Authorization: Bearer sk-right",
            "Content-Type: application/json",
            f"Content-Length: {len(BODY)}",
            auth=False,
        )
        assert ask(strict, good + BODY).status == 200


def test_a_bug_in_the_emulator_is_a_500_and_keeps_its_traceback(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("a bug in the renderer")

    monkeypatch.setattr(EmulatorState, "render", broken)
    with Emulator() as emu:
        reply = ask(emu, json_request())
        assert reply.status == 500
        assert reply.error()["type"] == "server_error"
        assert reply.headers["connection"] == "close"
        err = ""
        for _ in range(500):  # the traceback is printed just after the answer is sent (10 s: a loaded machine)
            err += capfd.readouterr().err
            if "RuntimeError: a bug in the renderer" in err:
                break
            time.sleep(0.02)
        assert "Traceback" in err and "RuntimeError: a bug in the renderer" in err


# --- 3. the loopback fetch of a source image ---------------------------------------------------------------------


def image2image(emu: Emulator, source_url: str) -> Reply:
    body = json.dumps(
        {"model": "step-2x-large", "prompt": "p", "size": "256x256", "source_url": source_url, "source_weight": 0.5}
    ).encode()
    return ask(emu, json_request(body, path="/v1/images/image2image"))


def test_a_redirect_off_loopback_is_refused_not_followed(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    dialled: list[object] = []
    real = socket.create_connection

    def spy(address: tuple[str, int], *args: object, **kwargs: object) -> socket.socket:
        dialled.append(address[0])
        return real(address, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "create_connection", spy)
    for target in ("http://192.0.2.2:9/x.png", "http://example.com/x.png", "http://[fd00::2]/x.png"):
        with hostile_server(answer(302, headers={"Location": target})) as server:
            reply = image2image(emu, server.url + "/source.png")
        assert reply.status == 400
        message = reply.error()["message"]
        assert message.startswith("Request param: source_url is invalid, recommended val is: ")
        assert "is not allowed" in message
    assert set(dialled) <= {"127.0.0.1"}, dialled  # the emulator dialled nothing but loopback


@pytest.mark.parametrize("url", ["http://[::1/x.png", "http://127.0.0.1:99999/x.png", "http://127.0.0.1:1/x.png"])
def test_an_unusable_source_url_is_400(emu: Emulator, url: str) -> None:
    reply = image2image(emu, url)
    assert reply.status == 400
    assert reply.error()["message"].startswith("Request param: source_url is invalid, recommended val is: ")


def test_a_redirect_to_loopback_is_followed(emu: Emulator) -> None:
    source = generate(emu, response_format="url").json()["data"][0]["url"]
    with hostile_server(answer(302, headers={"Location": source})) as server:
        assert image2image(emu, server.url + "/moved.png").status == 200


def test_endless_redirects_stop(emu: Emulator) -> None:
    with hostile_server(answer(302, headers={"Location": "/again"})) as server:
        reply = image2image(emu, server.url + "/loop.png")
    assert reply.status == 400
    assert "redirects" in reply.error()["message"]


def test_a_source_larger_than_10_mb_is_refused_by_its_length(emu: Emulator) -> None:
    big = make_png(64, 64) + b"\0" * (10 * 1024 * 1024)
    with hostile_server(answer(200, big, {"Content-Type": "image/png"})) as server:
        reply = image2image(emu, server.url + "/big.png")
    assert reply.status == 400
    assert "larger than 10485760 bytes" in reply.error()["message"]


@pytest.mark.parametrize("script", [trickle_headers(0.1), trickle_body(0.1, length=1000)], ids=["headers", "body"])
def test_a_trickling_source_is_given_up_on_in_bounded_time(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch, script: object
) -> None:
    monkeypatch.setattr(_params, "_FETCH_SECONDS", 1.0)  # 10 s in production
    with hostile_server(script) as server:  # type: ignore[arg-type]
        started = time.monotonic()
        reply = image2image(emu, server.url + "/slow.png")
    assert reply.status == 400
    assert "within 1 s" in reply.error()["message"]
    assert time.monotonic() - started < 5


def test_emulator_download_follows_no_redirect(emu: Emulator) -> None:
    with hostile_server(answer(302, headers={"Location": "http://127.0.0.1:9/x.png"})) as server:
        with pytest.raises(RuntimeError, match="HTTP 302"):
            within(10, lambda: emu.download(server.url + "/x.png"))


# --- 4. idle, slow and stalled clients ---------------------------------------------------------------------------


def test_an_idle_connection_is_closed_after_the_read_timeout(quick: Emulator) -> None:
    def run() -> float:
        with connect(quick) as sock:
            started = time.monotonic()
            assert closed_by_server(sock), "still open after 10 s"
            return time.monotonic() - started

    assert 0.4 < within(15, run) < 5


def test_a_keep_alive_connection_left_idle_is_closed_too(quick: Emulator) -> None:
    def run() -> bool:
        with connect(quick) as sock:
            sock.sendall(head("/_emulator/stats", method="GET"))
            assert read_reply(sock).status == 200
            return closed_by_server(sock)

    assert within(15, run)


def test_half_a_head_gets_408_after_the_read_timeout(quick: Emulator) -> None:
    def run() -> Reply:
        with connect(quick) as sock:
            sock.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            return read_reply(sock)

    assert within(10, run).status == 408


def test_a_slowloris_client_is_cut_off_while_others_are_served(quick: Emulator) -> None:
    # One header byte every 0.1 s: each read is quick, but the head never ends. The deadline is on
    # the whole head, so the connection goes after 0.5 s, and other clients are answered meanwhile.
    stop = threading.Event()
    cut_after: list[float] = []

    def slowloris() -> None:
        with connect(quick) as sock:
            started = time.monotonic()
            sock.sendall(b"POST /v1/images/generations HTTP/1.1\r\nX-Slow: ")
            try:
                while not stop.is_set():
                    sock.sendall(b"a")
                    time.sleep(0.1)
                    sock.setblocking(False)
                    try:
                        if sock.recv(65536) is not None:
                            break  # answered (408) or closed
                    except BlockingIOError:
                        pass
                    finally:
                        sock.setblocking(True)
                        sock.settimeout(10)
            except OSError:
                pass
            cut_after.append(time.monotonic() - started)

    attackers = [threading.Thread(target=slowloris, daemon=True) for _ in range(5)]
    for attacker in attackers:
        attacker.start()
    try:
        assert within(20, lambda: generate(quick).status_code) == 200
        for attacker in attackers:
            attacker.join(10)
        assert len(cut_after) == 5, "a slowloris connection was still open after 10 s"
        assert max(cut_after) < 5, cut_after
    finally:
        stop.set()


def test_a_client_that_never_reads_its_responses_is_dropped(quick: Emulator) -> None:
    # 200 pipelined requests, ~15 MB of answers, into a 4 KB receive buffer nobody reads: the
    # server's write blocks, and gives up after the read timeout instead of holding its thread.
    request = json_request(
        json.dumps({**json.loads(BODY), "response_format": "b64_json", "seed": 1, "size": "1024x1024"}).encode()
    )

    def run() -> tuple[int, int]:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(10)
            sock.connect(("127.0.0.1", quick.port))
            sock.sendall(request * 200)
            time.sleep(3)  # six read timeouts
            one = read_reply(sock)
            received = len(one.body)
            try:
                while got := sock.recv(1 << 20):
                    received += len(got)
            except ConnectionResetError:
                pass
            return received, len(one.body) * 200

    received, promised = within(20, run)
    assert received < promised / 2, "the server kept writing to a client that reads nothing"


def test_connections_beyond_max_connections_get_503_at_once() -> None:
    with Emulator(max_connections=2, read_timeout=5) as small:

        def run() -> None:
            held = [connect(small), connect(small)]  # two idle connections take both threads
            third = ask(small, head("/_emulator/stats", method="GET"))
            assert third.status == 503
            assert third.error()["type"] == "server_busy"
            assert third.headers["retry-after"] == "1"
            held.pop().close()  # a slot comes free as soon as its thread sees the close
            for _ in range(100):
                with connect(small) as sock:
                    sock.sendall(head("/_emulator/stats", method="GET"))
                    if read_reply(sock).status == 200:
                        break
                time.sleep(0.05)
            else:
                pytest.fail("no slot came free after a connection closed")
            held[0].close()

        within(20, run)


def test_the_bounds_have_cli_flags_defaults_and_checks() -> None:
    assert (Emulator().config.read_timeout, Emulator().config.max_connections) == (30.0, 1024)
    defaults = emulator_from_args(build_parser().parse_args([])).config
    assert (defaults.read_timeout, defaults.max_connections) == (30.0, 1024)
    given = emulator_from_args(build_parser().parse_args(["--read-timeout", "2.5", "--max-connections", "8"])).config
    assert (given.read_timeout, given.max_connections) == (2.5, 8)
    for flag, value in (("--read-timeout", "0"), ("--max-connections", "-1"), ("--read-timeout", "soon")):
        with pytest.raises(SystemExit):
            build_parser().parse_args([flag, value])
    with pytest.raises(ValueError, match="read_timeout must be a positive number of seconds"):
        Emulator(read_timeout=0)
    with pytest.raises(ValueError, match="max_connections must be at least 1"):
        Emulator(max_connections=0)
