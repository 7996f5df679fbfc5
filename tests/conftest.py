"""Suite-wide settings: the tests compile into a persistent compilation cache of their own (a
fresh folder per session, shared by pytest-xdist workers and inherited by the subprocesses the
tests start, removed at the end), never the user's."""

import os
import shutil
import tempfile

_OWNER = "CMAMAE_TEST_CACHE_OWNER"  # the pid of the process that made the session's folder

if _OWNER not in os.environ:  # the session's first process (xdist's controller, or plain pytest)
    os.environ["CMAMAE_COMPILE_CACHE"] = tempfile.mkdtemp(prefix="cmamae-test-jax-cache-")
    os.environ[_OWNER] = str(os.getpid())


def pytest_unconfigure(config):
    if os.environ.get(_OWNER) == str(os.getpid()):
        shutil.rmtree(os.environ["CMAMAE_COMPILE_CACHE"], ignore_errors=True)
