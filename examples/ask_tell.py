"""QD on your own objective written in plain Python/NumPy: the host-side ask/tell loop.

A 12-joint planar arm in NumPy: find joint angles that put the hand everywhere in reach
(measures = hand position x, y) while keeping the joints as even as possible (objective =
−variance of the angles). Archive + emitters + scheduler are the library's building blocks,
pyribs-like; only ask() and tell() cross between NumPy and the compiled JAX functions.

    python examples/ask_tell.py
"""

import numpy as np

import cmamae
from cmamae import archives, emitters, es

N_JOINTS = 12


def evaluate(angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """angles (batch, N_JOINTS) in radians -> objectives (batch,), measures (batch, 2)."""
    cumulative = np.cumsum(angles, axis=1)
    hand = np.stack([np.cos(cumulative).sum(1), np.sin(cumulative).sum(1)], axis=1) / N_JOINTS
    return -np.var(angles, axis=1), hand


def main(iterations: int = 300):
    archive = archives.GridArchive(
        solution_dim=N_JOINTS,
        dims=(50, 50),
        ranges=[(-1, 1), (-1, 1)],
        learning_rate=0.01,  # CMA-MAE's annealing; 1.0 would be CMA-ME's MAP-Elites archive
        threshold_min=-(np.pi**2),  # the worst variance of angles in [-pi, pi]
        qd_score_offset=-(np.pi**2),
    )
    emitter = emitters.EvolutionStrategyEmitter(
        strategy=es.SepCMAES(popsize=36, sigma0=0.5), num_emitters=5, ranker="imp"
    )
    scheduler = cmamae.Scheduler(archive=archive, emitters=(emitter,))
    loop = cmamae.AskTell(scheduler, x0=np.zeros(N_JOINTS, np.float32), seed=0)
    for it in range(1, iterations + 1):
        angles = loop.ask()  # (180, 12) NumPy
        objectives, measures = evaluate(angles)
        loop.tell(objectives, measures)
        if it % 50 == 0:
            s = loop.stats()
            print(
                f"iteration {it:4d}  coverage {s['coverage']:.1%}  qd_score {s['qd_score']:.1f}"
                f"  best {s['obj_max']:.4f}"
            )
    elites = scheduler.best_archive.to_dataframe(scheduler.best_state(loop.state))
    print(f"{len(elites)} elites; the most even arm reaching x > 0.9:")
    print(elites[elites["measures_0"] > 0.9].nlargest(1, "objective").iloc[0, :4].to_string())


if __name__ == "__main__":
    main()
