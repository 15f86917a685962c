"""pytest plugin: a StepFun emulator and clients pointed at it.

Enable it with ``pytest_plugins = ["stepfun_openai.testing"]`` (this project loads it through
``addopts``). Fixtures:

- ``stepfun_emulator``: a running :class:`~stepfun_openai.emulator.Emulator`. One server per
  session, reset before each test; a test marked ``@pytest.mark.stepfun_emulator(**options)``
  gets a server of its own with those options (``tier="V0"``, ``faults=...``, ...).
- ``stepfun_emulator_factory``: ``factory(**options)`` starts more emulators, stopped after the test.
- ``stepfun_client`` / ``async_stepfun_client``: ``StepFun`` / ``AsyncStepFun`` for the emulator.

Imports only the standard library and pytest at import time; the emulator and the client load
when a fixture is used.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from stepfun_openai import AsyncStepFun, StepFun
    from stepfun_openai.emulator import Emulator

__all__ = [
    "async_stepfun_client",
    "stepfun_client",
    "stepfun_emulator",
    "stepfun_emulator_factory",
]

_MARKER = "stepfun_emulator"

try:  # async fixtures need pytest-asyncio's decorator in its strict mode
    import pytest_asyncio

    _async_fixture: Callable[..., Any] = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - without pytest-asyncio nothing can await the client anyway
    _async_fixture = pytest.fixture


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{_MARKER}(**options): run the test against its own emulator with these Emulator options"
    )


@pytest.fixture(scope="session")
def _stepfun_emulator_session() -> Iterator[Emulator]:
    from stepfun_openai.emulator import Emulator

    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def stepfun_emulator_factory() -> Iterator[Callable[..., Emulator]]:
    from stepfun_openai.emulator import Emulator

    started: list[Emulator] = []

    def factory(**options: Any) -> Emulator:
        emulator = Emulator(**options).start()
        started.append(emulator)
        return emulator

    yield factory
    for emulator in reversed(started):
        emulator.stop()


@pytest.fixture
def stepfun_emulator(request: pytest.FixtureRequest, stepfun_emulator_factory: Callable[..., Emulator]) -> Emulator:
    marker = request.node.get_closest_marker(_MARKER)
    if marker is not None:
        return stepfun_emulator_factory(**marker.kwargs)
    shared: Emulator = request.getfixturevalue("_stepfun_emulator_session")
    shared.reset()
    return shared


@pytest.fixture
def stepfun_client(stepfun_emulator: Emulator) -> Iterator[StepFun]:
    from stepfun_openai import StepFun

    client = StepFun(api_key=stepfun_emulator.api_key, base_url=stepfun_emulator.base_url)
    try:
        yield client
    finally:
        client.close()


@_async_fixture
async def async_stepfun_client(stepfun_emulator: Emulator) -> AsyncIterator[AsyncStepFun]:
    from stepfun_openai import AsyncStepFun

    client = AsyncStepFun(api_key=stepfun_emulator.api_key, base_url=stepfun_emulator.base_url)
    try:
        yield client
    finally:
        await client.close()
