"""Installs the suite's network guard in every Python process the tests start (see
loopback_only.py); tests/conftest.py puts this folder on their PYTHONPATH."""

import loopback_only

loopback_only.install()
