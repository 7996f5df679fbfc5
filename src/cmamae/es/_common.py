"""Pieces every evolution strategy shares: argument checks, ranking, weights, Gaussian noise.

Noise. Every strategy draws its standard-normal samples through :func:`standard_normal`, from
one of two generators chosen by the strategy's ``noise`` setting:

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
import math

import jax
import jax.numpy as jnp
import numpy as np

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


# --------------------------------------------------------------------------- argument checks
def check_popsize(popsize) -> int:
    if isinstance(popsize, bool) or not isinstance(popsize, (int, np.integer)) or popsize < 2:
        raise ValueError(f"popsize must be an integer >= 2, got {popsize!r}")
    return int(popsize)


def check_positive(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


def check_noise(noise: str, allow_auto: bool = False, allow_shared: bool = False) -> str:
    kinds = (("auto",) if allow_auto else ()) + (ES_NOISE_KINDS if allow_shared else NOISE_KINDS)
    if noise not in kinds:
        raise ValueError(f"noise must be one of {kinds}, got {noise!r}")
    return noise


def resolve_noise(noise: str, samples: int, n: int, shared: bool = False) -> str:
    """The generator for ``noise`` (a :data:`NOISE_SETTINGS` value, or with ``shared`` also
    "shared") when each ask draws ``samples`` vectors of dimension ``n``: ``noise`` itself, or
    for "auto" "table" (with ``shared``: "shared") when ``samples · n >= AUTO_TABLE_FROM`` and
    "normal" below.

    Measured on the 2-core CPU (jax 0.10; load 3-6 from other jobs, so ±30 %; median ms per
    iteration, table / normal; 100 × 100 grid archive, ψ = 5):

    * compiled loop (``compiled_run``): CMA-ES λ = 20, n = 32 (640 numbers per ask)
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


def check_x0(x0) -> jax.Array:
    """Return ``x0`` as a floating array of shape ``(n,)``; raise ValueError when it is not.

    Finiteness is checked only for concrete arrays (under ``jit``/``vmap`` the values are
    unknown; the public entry points call this outside traces first).
    """
    x0 = jnp.asarray(x0)
    if x0.ndim != 1 or x0.shape[0] < 1:
        raise ValueError(f"x0 must be a 1-D array of shape (n,), got shape {x0.shape}")
    if not jnp.issubdtype(x0.dtype, jnp.floating):
        x0 = x0.astype(jnp.result_type(float))
    if not isinstance(x0, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(x0))):
        raise ValueError("x0 must be finite, got NaN or inf entries")
    return x0


def check_tell_args(popsize: int, n: int, solutions, fitness) -> tuple[jax.Array, jax.Array]:
    """Check the shapes given to ``tell``: solutions ``(popsize, n)``, fitness ``(popsize,)``."""
    solutions = jnp.asarray(solutions)
    fitness = jnp.asarray(fitness)
    if solutions.shape != (popsize, n):
        raise ValueError(f"solutions must have shape ({popsize}, {n}), got {solutions.shape}")
    if fitness.shape != (popsize,):
        raise ValueError(f"fitness must have shape ({popsize},), got {fitness.shape}")
    return solutions, fitness


# --------------------------------------------------------------------------- ranking
def rank_order(fitness: jax.Array) -> jax.Array:
    """Indices that sort ``fitness`` from best (highest) to worst; NaN ranks last.

    Ties keep their batch order (stable sort). Shape ``(popsize,)`` int32.
    """
    key = jnp.where(jnp.isnan(fitness), -jnp.inf, fitness)
    # Stable descending sort: sort ascending on the negation.
    return jnp.argsort(-key, stable=True)


def log_weights(popsize: int, mu: int | None = None) -> np.ndarray:
    """Positive recombination weights w_i ∝ ln((λ+1)/2) − ln i, i = 1..μ, summing to 1.

    Hansen (2016), Eq. 49 for the first μ = ⌊λ/2⌋ (positive) weights. Shape ``(μ,)`` float64.
    """
    mu = popsize // 2 if mu is None else mu
    w = math.log((popsize + 1) / 2) - np.log(np.arange(1, mu + 1))
    return w / w.sum()


def mu_eff(weights: np.ndarray) -> float:
    """Variance-effective selection mass (Σ w_i)² / Σ w_i² of the positive weights."""
    w = np.asarray(weights)
    return float(w.sum() ** 2 / (w**2).sum())


def expected_norm(n: int) -> float:
    """E‖N(0, I_n)‖ ≈ √n (1 − 1/(4n) + 1/(21 n²)) (Hansen 2016, p. 21)."""
    return math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n**2))


# --------------------------------------------------------------------------- step size
def csa_update(ps, sigma, whitened_step, generation, dtype, *, cs, damps, mueff, chi_n):
    """Cumulative step-size adaptation of CMA-ES and sep-CMA-ES, and the h_σ indicator.

    ``whitened_step`` is C^{-1/2} <y>_w and ``generation`` the count g + 1 after this update.
    Returns the new p_σ, σ and h_σ (as a ``dtype`` 0/1 scalar). Hansen (2016), Eqs. 43-44;
    the exponent is clipped at 1, as pycma does. ``cs``, ``damps``, ``mueff`` are Python
    floats, or traced scalars when they depend on the number of parents (selection "filter").
    """
    n = ps.shape[-1]
    coef = cs * (2 - cs) * mueff
    coef = math.sqrt(coef) if isinstance(coef, float) else jnp.sqrt(coef)
    ps = (1 - cs) * ps + coef * whitened_step  # Eq. 43
    ps_norm = jnp.linalg.norm(ps)
    sigma = sigma * jnp.exp(jnp.minimum(1.0, (cs / damps) * (ps_norm / chi_n - 1)))  # Eq. 44
    # h_σ (below Eq. 45): ‖p_σ‖ / √(1 − (1 − c_σ)^{2(g+1)}) < (1.4 + 2/(n+1)) E‖N(0, I)‖
    ps_bias = jnp.sqrt(1 - (1 - cs) ** (2 * generation.astype(dtype)))
    hsig = (ps_norm / ps_bias < (1.4 + 2 / (n + 1)) * chi_n).astype(dtype)
    return ps, sigma, hsig


# --------------------------------------------------------------------------- noise
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
        return jax.random.normal(key, shape, dtype)
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


# --------------------------------------------------------------------------- row loops
# Full unrolling up to this many rows: XLA then fuses the whole loop into one pass that reads
# only the selected rows (measured at n = 20,000: ~3x faster than a batched matrix-vector
# product over a gathered copy); longer loops unroll by this much.
ROW_LOOP_UNROLL = 32


def row_loop(count: int, body, init):
    """``jax.lax.fori_loop(0, count, body, init)``, unrolled as :data:`ROW_LOOP_UNROLL` says.

    Used for the weighted sums over ranked rows of a ``(popsize, n)`` batch (recombination),
    which this makes one pass over the μ selected rows with no gathered copy.
    """
    return jax.lax.fori_loop(0, count, body, init, unroll=max(1, min(count, ROW_LOOP_UNROLL)))


def row(rows: jax.Array, i) -> jax.Array:
    """``rows[i]`` for a traced scalar index ``i`` (a dynamic slice, no gather)."""
    return jax.lax.dynamic_index_in_dim(rows, i, axis=0, keepdims=False)


# --------------------------------------------------------------------------- stopping tests
def fitness_range(fitness: jax.Array) -> jax.Array:
    """Best minus worst of the finite entries of ``fitness`` ``(popsize,)``; inf when fewer than
    two are finite. pyribs' "flat fitness" stopping test compares this with 1e-12."""
    finite = jnp.isfinite(fitness)
    hi = jnp.max(jnp.where(finite, fitness, -jnp.inf))
    lo = jnp.min(jnp.where(finite, fitness, jnp.inf))
    return jnp.where(jnp.sum(finite) >= 2, hi - lo, jnp.inf)
