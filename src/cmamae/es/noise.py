"""Gaussian noise of the evolution strategies and the emitters: the generators and their samples.

Every strategy and emitter draws its standard-normal samples through :func:`standard_normal`,
from one of the generators chosen by its ``noise`` setting:

* ``"normal"``: ``jax.random.normal`` (threefry). Exact i.i.d. N(0, 1), but on a CPU it costs
  20-45 memory passes per number (REFERENCE.md), which dominates a Θ(n) ES at large n.
* ``"table"``: a table of i.i.d. N(0, 1) values drawn once at ``init`` and kept in the state
  (Salimans et al. 2017 shared one for the same reason). Sample j of a batch is the contiguous
  table slice starting at a uniform random offset o_j in [0, S - n], each entry multiplied by
  an independent random sign: z_j[i] = s_ji * T[o_j + i]. Signs make any two samples
  uncorrelated even where their slices overlap; 1 random bit per number instead of 32.
  The table has S = max(2^20, next power of two >= 16 n) entries, so distinct samples rarely
  share much of a slice; it costs S floats per ES instance and about one memory pass per
  number (at n = 20,000 on the 2-core CPU: ~1 ms for the 4 M numbers of ψ = 5, λ = 40, against
  ~45-95 ms for ``jax.random.normal``; REFERENCE.md).

* ``"shared"`` (evolution strategies only): the same sampling from one table per (size, dtype)
  for the whole process, drawn once from the fixed key :data:`SHARED_TABLE_SEED`
  (:func:`shared_table`) and kept out of the state: ``ask`` reads it as a compile-time
  constant, and the state's noise leaf is empty, as for "normal". A state that carries a table
  is copied by every call of a user's ``jax.jit(jax.vmap(strategy.ask))`` and ``... tell``, as
  a jit that does not donate its arguments writes every output to a fresh buffer (ψ = 5
  tables of 4 MiB at n = 20,000: ~3 ms per call on the 2-core CPU, as much as the ask itself);
  with the shared table the two calls copy only the Θ(n) distribution state. All instances
  and runs read the same table magnitudes; which slices and signs they take comes from their
  keys, as with "table" (Salimans et al. shared one fixed table across all workers).

The setting ``"auto"`` (every strategy's default) picks from the numbers one ask draws
(:func:`resolve_noise`): "normal" for small problems, where it is as fast and a table would only
add memory and host-side copies; from there on "shared" for an evolution strategy used on its
own (:meth:`cmamae.es.base.EvolutionStrategy.resolved_noise`), "table" for the QD algorithms
(:func:`cmamae.algorithms.get` resolves "auto" with :func:`resolve_noise`; their compiled loop
donates the state, so a table in it is never copied).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cmamae import _random, validate

NOISE_KINDS = ("normal", "table")
#: ``noise`` settings: a generator, or "auto" (:func:`resolve_noise`)
NOISE_SETTINGS = ("auto", *NOISE_KINDS)
#: the generators an evolution strategy takes: also the process-wide table
ES_NOISE_KINDS = (*NOISE_KINDS, "shared")
#: key of the process-wide table of noise="shared" (:func:`shared_table`)
SHARED_TABLE_SEED = 0
# "auto" takes "table" from this many standard-normal numbers per ask (λ n) on: see
# resolve_noise for the measurements.
AUTO_TABLE_FROM = 4096


def check_noise(noise: str, allow_auto: bool = False, allow_shared: bool = False) -> str:
    """``noise`` when it names a generator: "normal" or "table", with ``allow_auto`` also
    "auto", with ``allow_shared`` also "shared"; else ValueError."""
    kinds = (("auto",) if allow_auto else ()) + (ES_NOISE_KINDS if allow_shared else NOISE_KINDS)
    return validate.one_of("noise", noise, kinds)


def resolve_noise(noise: str, samples: int, n: int, shared: bool = False) -> str:
    """The generator for ``noise`` (a :data:`NOISE_SETTINGS` value, or with ``shared`` also
    "shared") when each ask draws ``samples`` vectors of dimension ``n``: ``noise`` itself, or
    for "auto" "table" (with ``shared``: "shared") when ``samples · n >= AUTO_TABLE_FROM`` and
    "normal" below.

    Measured on the 2-core CPU (jax 0.10; load 3-6 from other jobs, so ±30 %; median ms per
    iteration, table / normal; 100 × 100 grid archive, ψ = 5):

    * compiled loop (``compiled_scan``): CMA-ES λ = 20, n = 32 (640 numbers per ask)
      0.74 / 0.95; sep-CMA-ES λ = 40: n = 32 (1,280) 0.62 / 0.64, n = 100 (4,000)
      0.47 / 0.57, n = 1,000 1.04 / 3.58, n = 3,000 1.50 / 6.2, n = 10^4 3.6 / 20.7. The
      table never loses there.
    * host-side ask/tell (:class:`cmamae.AskTell`, benchmarks/asktell_speed.py; its ``ask``
      does not donate the state, so every ask copies the ψ tables of 4 MiB each, ~2-3 ms):
      CMA-ES 5 × 20, n = 32: 3.7 / 2.1 (pyribs 4.1); sep-CMA-ES 5 × 40: n = 32 9.1 / 3.2,
      n = 100 12.2 / 3.7, n = 300 34 / 9.9 (pyribs 9.3, 14.2, 30). With that ask donating the
      state, the copy goes: n = 32 3.1 / 2.8, n = 300 3.7 / 11.1.

    So below a few thousand numbers per ask ``jax.random.normal`` costs next to nothing in
    either loop while the table adds its 4 MiB per instance (memory, and the host-side
    copies); from there on the table wins the compiled loop, by 3.5x at n = 1,000.
    """
    check_noise(noise, allow_auto=True, allow_shared=shared)
    if noise != "auto":
        return noise
    if samples * n < AUTO_TABLE_FROM:
        return "normal"
    return "shared" if shared else "table"


def noise_table_size(n: int) -> int:
    """Entries of the noise table for solutions of dimension ``n`` (see module docstring)."""
    return max(2**20, 1 << (16 * n - 1).bit_length())


def init_noise(key: jax.Array, noise: str, n: int, dtype) -> jax.Array:
    """The noise state kept inside an ES state: the table ``(S,)`` for "table", ``(0,)`` for
    "normal" and "shared" (whose table is :func:`shared_table`, outside the state)."""
    if noise in ("normal", "shared"):
        return jnp.zeros((0,), dtype)
    return jax.random.normal(key, (noise_table_size(n),), dtype)


@functools.lru_cache(maxsize=8)
def _shared_table(size: int, dtype_name: str) -> np.ndarray:
    # Eager even inside a trace, and in the partitionable threefry layout whatever the global
    # setting, so the values depend on the size and dtype only.
    with jax.ensure_compile_time_eval(), jax.threefry_partitionable(True):
        table = jax.random.normal(jax.random.key(SHARED_TABLE_SEED), (size,), dtype_name)
    table = np.asarray(table)
    table.flags.writeable = False
    return table


def shared_table(n: int, dtype) -> np.ndarray:
    """The process-wide table of noise="shared" for dimension ``n``: ``noise_table_size(n)``
    N(0, 1) values drawn from ``jax.random.key(SHARED_TABLE_SEED)``, made once per (size,
    dtype) and read-only. A NumPy array, so a trace that uses it embeds it as a constant."""
    return _shared_table(noise_table_size(n), jnp.dtype(dtype).name)


def noise_source(kind: str, noise: jax.Array, n: int, dtype) -> jax.Array:
    """The ``table`` argument of :func:`standard_normal` for generator ``kind`` (a resolved
    :data:`ES_NOISE_KINDS` value) and a state's noise leaf ``noise``: the shared table for
    "shared", else ``noise`` itself."""
    if kind == "shared":
        return jnp.asarray(shared_table(n, dtype))
    return noise


def standard_normal(key: jax.Array, table: jax.Array, shape: tuple[int, int], dtype) -> jax.Array:
    """``shape = (m, n)`` standard-normal samples from the generator ``table`` stands for."""
    m, n = shape
    if table.shape[0] == 0:
        return _random.normal(key, shape, dtype)
    size = table.shape[0]
    if size < n:
        raise ValueError(f"noise table of {size} entries is shorter than a sample ({n})")
    # Drawn with the partitionable threefry layout whatever the global setting (the stream
    # depends only on the key and the table), whose words XLA reads as one xor of two
    # materialized arrays. The classic layout concatenates two halves, and XLA fuses that
    # concatenate into the per-number loop: inside the QD emitter's sampling loop (n = 20,000,
    # ψ = 5, λ = 40, 2-core CPU) that made the whole QD iteration ~2 ms slower (11.4 vs 9.3 ms
    # CPU time); for the ES alone (tests/es, es_speed) the two layouts cost the same within
    # noise. Offsets and signs from one draw instead of two was slower still (12.9 ms).
    with jax.threefry_partitionable(True):
        k_off, k_sign = jax.random.split(key)
        offsets, words = _table_draws(k_off, k_sign, m, n, size)
    values = jax.vmap(lambda o: jax.lax.dynamic_slice_in_dim(table, o, n))(offsets)
    # Bit b of word w is the sign of entry 32 w + b.
    bits = (words[:, :, None] >> jnp.arange(32, dtype=jnp.uint32)) & 1
    signs = 1 - 2 * bits.reshape(m, -1)[:, :n].astype(dtype)
    return values * signs


def _table_draws(k_off, k_sign, m: int, n: int, size: int):
    """Row offsets ``(m,)`` into a table of ``size`` and sign words ``(m, ceil(n / 32))``."""
    # Offsets uniform in [0, S - n], by scaling a uniform float rather than by randint: XLA
    # fuses this small computation into the per-number loop, where randint's integer
    # remainders would be redone for every number (5x slower at n = 20,000).
    count = size - n + 1
    u = jax.random.uniform(k_off, (m,), jnp.float32)
    offsets = jnp.minimum((u * count).astype(jnp.int32), count - 1)
    words = jax.random.bits(k_sign, (m, -(-n // 32)), jnp.uint32)
    return offsets, words
