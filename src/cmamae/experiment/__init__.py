"""The experiment runner: configs and presets, run folders, chunked compiled runs over seeds,
metrics, checkpoints and exact resume (``cmamae run`` is a thin layer over it)."""

from cmamae.experiment.config import ConfigError, RunConfig, preset_names
from cmamae.experiment.runner import RunExistsError, RunOutcome, resume, start

__all__ = [
    "ConfigError",
    "RunConfig",
    "RunExistsError",
    "RunOutcome",
    "preset_names",
    "resume",
    "start",
]
