"""Installs the suite's network guard in every Python process the tests start (see
loopback_only.py), and in a run a test watches for what it leaves in /dev/shm, the names that
tell its shared memory apart (shm_tag.py); tests/conftest.py puts this folder on their
PYTHONPATH."""

import loopback_only
import shm_tag

loopback_only.install()
shm_tag.install()
