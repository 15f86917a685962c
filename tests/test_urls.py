"""One answer to "is this a URL?", and URLs safe to store."""

from __future__ import annotations

import pytest

from stepfun_openai._urls import is_data_url, is_http_url, is_loopback_host, redact_url


@pytest.mark.parametrize(
    ("value", "http", "data"),
    [
        ("https://res.example/a.png", True, False),
        ("HTTP://127.0.0.1:8000/a.png", True, False),
        ("data:image/png;base64,iVBOR", False, True),
        ("DATA:image/png;base64,iVBOR", False, True),
        ("photos/https-cat.png", False, False),
        ("ftp://res.example/a.png", False, False),
        (b"https://res.example/a.png", False, False),
        (None, False, False),
    ],
)
def test_a_string_is_an_http_url_a_data_url_or_neither(value: object, http: bool, data: bool) -> None:
    assert (is_http_url(value), is_data_url(value)) == (http, data)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("localhost", True), ("127.0.0.1", True), ("[::1]", True), ("10.0.0.1", False), ("res.example", False)],
)
def test_only_this_machine_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_signed_query_values_are_redacted_and_the_rest_kept() -> None:
    url = "https://res.example/a.png?X-Tos-Date=20250101T000000Z&X-Tos-Signature=abc&X-Tos-Expires=3600#f"
    assert redact_url(url) == (
        "https://res.example/a.png?X-Tos-Date=20250101T000000Z&X-Tos-Signature=REDACTED&X-Tos-Expires=3600#f"
    )
    assert redact_url(url, keep_query=False) == "https://res.example/a.png?..."
    assert redact_url("https://res.example/a.png", keep_query=False) == "https://res.example/a.png"
