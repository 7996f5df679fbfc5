"""Diverse walking gaits for the ant: sep-CMA-MAE on QD Ant, compiled end to end.

Each solution is a 2x128 tanh MLP (about 21k parameters); measures are the fraction of steps
each foot touches the floor. The physics backend is the task's "auto": on a CPU native MuJoCo
batched on threads (behind a host callback of the compiled loop), on a GPU MJX (one
``lax.scan`` per episode, vmapped over the batch); ``--backend`` picks one. The default here is
small enough for a CPU (short episodes, a few iterations); on a GPU raise ``--episode-length``
to 1000 and ``--evals`` towards the paper's 1,000,000.

    python examples/locomotion.py --episode-length 100 --evals 4000 --seeds 2
    # the same from the command line, with a run folder, checkpoints and plots:
    cmamae run --task ant --algo sep-cma-mae --set task.episode_length=100 --evals 4000
"""

import argparse

import jax

import cmamae
from cmamae import algorithms, tasks


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="ant", choices=["ant", "halfcheetah", "hopper", "walker2d"])
    p.add_argument("--algo", default="sep-cma-mae")
    p.add_argument("--episode-length", type=int, default=50)
    p.add_argument("--evals", type=int, default=2000)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--backend", default="auto", choices=["auto", "mjx", "native"])
    args = p.parse_args(argv)

    task = tasks.get(args.task, episode_length=args.episode_length, backend=args.backend)
    algo = algorithms.get(args.algo, task)
    print(
        f"{task.name} ({tasks.locomotion.resolved_settings(task)['backend']} backend): "
        f"{task.solution_dim:,} parameters, archive {task.archive_dims}, "
        f"batch {algo.scheduler.batch_size} per iteration"
    )
    result = cmamae.run(task, algo, evals=args.evals, seeds=args.seeds, key=jax.random.key(0))
    final = result.final()
    for s in range(args.seeds):
        print(
            f"seed {s}: qd_score {final['qd_score'][s]:,.1f}  coverage "
            f"{final['coverage'][s]:.1%}  best {final['obj_max'][s]:.1f}"
        )


if __name__ == "__main__":
    main()
