"""The pairing runtime tests run under both anyio backends, on 127.0.0.1 only."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Each async test runs once on asyncio and once on trio."""
    return str(request.param)
