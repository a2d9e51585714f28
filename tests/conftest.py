"""Test configuration: the Keras backend, quiet progress bars, and access to ../shared.

Tests that need the reference models and data use the ``shared`` fixture. They skip when
``../shared`` is absent, unless ``SPKERAS_REQUIRE_SHARED=1`` (set by ``.ci/run``), which turns
the absence into a failure.
"""

import os
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("SPKERAS_QUIET", "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def require_shared(*parts: str) -> Path:
    """Path inside ../shared; skip (or fail under SPKERAS_REQUIRE_SHARED=1) when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"{path} is absent"
        if os.environ.get("SPKERAS_REQUIRE_SHARED") == "1":
            pytest.fail(message + " and SPKERAS_REQUIRE_SHARED=1")
        pytest.skip(message)
    return path


@pytest.fixture
def shared():
    """The ../shared folder (reference models and data)."""
    return require_shared()
