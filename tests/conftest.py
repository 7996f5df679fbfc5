"""Suite-wide settings: the tests compile into a persistent compilation cache of their own (a
fresh folder per session, inherited by the subprocesses they start), never the user's."""

import os
import tempfile

os.environ["CMAMAE_COMPILE_CACHE"] = tempfile.mkdtemp(prefix="cmamae-test-jax-cache-")
