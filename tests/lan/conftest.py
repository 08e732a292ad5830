"""The ``lan`` fixture: a fresh LAN of network namespaces per test (see ``tests/netns.py``)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.netns import Lan, NetnsUnavailable


@pytest.fixture
def lan() -> Iterator[Lan]:
    """A :class:`tests.netns.Lan` torn down after the test (its processes killed, its namespaces deleted).

    Skips where namespaces cannot be made (not root, no ``ip``), and fails there instead when ``CI=true``.
    """
    try:
        network = Lan()
    except NetnsUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must be able to make network namespaces: {exc}")
        pytest.skip(str(exc))
    try:
        yield network
    finally:
        network.close()
