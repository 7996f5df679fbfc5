"""Suite-wide settings.

* The processes the tests start (CLI runs, resumes, a second JAX process) compile into a
  persistent compilation cache of the session's own (a fresh folder, shared by pytest-xdist
  workers, removed at the end), never the user's.
* The pytest processes themselves compile without it (:func:`cmamae.compile_cache.disable`):
  they would serialize hundreds of test programs that nothing reads back. The cache is tested
  where it matters, across processes (tests/experiment/test_first_run.py).
* Every test module ends by dropping JAX's compiled programs (``jax.clear_caches``). XLA's CPU
  executables map their code in many small memory regions that live as long as the program
  is cached: a whole suite in one process would pass Linux's 65,530 mappings per process
  (``vm.max_map_count``; 16,000 after two minutes of the emitter tests, and growing), and the next
  ``mmap`` of a compile or of a cache serialization crashed the process (the segmentation
  faults of earlier CI runs, late in the suite, never in a file run alone).
"""

import gc
import os
import shutil
import tempfile

import jax
import pytest

from cmamae import compile_cache

_OWNER = "CMAMAE_TEST_CACHE_OWNER"  # the pid of the process that made the session's folder

if _OWNER not in os.environ:  # the session's first process (xdist's controller, or plain pytest)
    os.environ[compile_cache.ENV] = tempfile.mkdtemp(prefix="cmamae-test-jax-cache-")
    os.environ[_OWNER] = str(os.getpid())
compile_cache.disable()


def pytest_unconfigure(config):
    if os.environ.get(_OWNER) == str(os.getpid()):
        shutil.rmtree(os.environ[compile_cache.ENV], ignore_errors=True)


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_programs():
    yield
    jax.clear_caches()
    gc.collect()
