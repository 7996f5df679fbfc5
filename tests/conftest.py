"""Suite-wide settings.

* Every process of the session (the pytest-xdist workers, and the CLI runs, resumes and
  second JAX processes the tests start) compiles through a persistent compilation cache of the
  session's own (a fresh folder, removed at the end), never the user's: a program another test
  compiled (the same run resumed, the same configuration in another file or process) is
  loaded. It took the suite from 2,026 to 1,883 CPU-seconds.
* The pytest processes use JAX's cache only, not cmamae's whole programs: those are looked up
  under a key computed before tracing, which cannot see a test's monkeypatches, while JAX's
  key hashes the traced program. The processes the tests start keep both (the default), and
  the whole-program cache is tested across processes (tests/experiment/test_first_run.py).
* A test module that ends with the process holding more than :data:`MAX_MAPPINGS` memory
  mappings drops JAX's compiled programs (``jax.clear_caches``). XLA's CPU executables map
  their code in many small memory regions that live as long as the program is cached: a whole
  suite in one process would pass Linux's 65,530 mappings per process (``vm.max_map_count``;
  16,000 after two minutes of the emitter tests, and growing), and the next ``mmap`` of a
  compile or of a cache serialization crashed the process (the segmentation faults of earlier
  CI runs, late in the suite, never in a file run alone). Dropping them after every module
  instead made each module compile again the small programs the ones before it had compiled.
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
compile_cache.enable(os.environ[compile_cache.ENV])


def pytest_unconfigure(config):
    if os.environ.get(_OWNER) == str(os.getpid()):
        shutil.rmtree(os.environ[compile_cache.ENV], ignore_errors=True)


@pytest.fixture(autouse=True, scope="session")
def _no_whole_programs_in_pytest_processes():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compile_cache, "programs_dir", lambda: None)
        yield


#: memory mappings of a pytest process above which its compiled programs are dropped
MAX_MAPPINGS = 25_000


def _mappings() -> int:
    try:
        with open("/proc/self/maps", "rb") as f:
            return f.read().count(b"\n")
    except OSError:  # not Linux: drop them after every module
        return MAX_MAPPINGS + 1


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_programs():
    yield
    if _mappings() > MAX_MAPPINGS:
        jax.clear_caches()
        gc.collect()
