"""The TPU compile worker reads XLA_FLAGS too: it compiles with the flags a user's would, not
with the suite's faster CPU compile (tests/conftest.FAST_CPU_COMPILE)."""

import os

import pytest

from tests.conftest import FAST_CPU_COMPILE


@pytest.fixture(autouse=True)
def _users_xla_flags(monkeypatch):
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if f != FAST_CPU_COMPILE]
    monkeypatch.setenv("XLA_FLAGS", " ".join(flags))
