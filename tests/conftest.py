"""Suite-wide settings.

* The processes the tests start (CLI runs, resumes, a second JAX process) compile into a
  persistent compilation cache of the session's own (a fresh folder, shared by pytest-xdist
  workers, removed at the end), never the user's.
* The pytest processes themselves compile without it (:func:`cmamae.compile_cache.disable`):
  they would serialize hundreds of test programs that nothing reads back, and the one CI crash
  seen so far was a segmentation fault inside JAX's serialization of such an entry (not
  reproduced here). The cache is tested where it matters, across processes
  (tests/experiment/test_first_run.py).
"""

import os
import shutil
import tempfile

from cmamae import compile_cache

_OWNER = "CMAMAE_TEST_CACHE_OWNER"  # the pid of the process that made the session's folder

if _OWNER not in os.environ:  # the session's first process (xdist's controller, or plain pytest)
    os.environ[compile_cache.ENV] = tempfile.mkdtemp(prefix="cmamae-test-jax-cache-")
    os.environ[_OWNER] = str(os.getpid())
compile_cache.disable()


def pytest_unconfigure(config):
    if os.environ.get(_OWNER) == str(os.getpid()):
        shutil.rmtree(os.environ[compile_cache.ENV], ignore_errors=True)
