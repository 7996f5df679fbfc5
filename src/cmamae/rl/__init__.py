"""Reinforcement learning for the QD-RL baselines: a ring replay buffer of rollout transitions
and TD3 (twin critics, a greedy actor), as pure functions over state pytrees."""

from cmamae.rl.replay_buffer import Batch, BufferState, ReplayBuffer
from cmamae.rl.td3 import TD3, TD3Settings, TD3State

__all__ = ["TD3", "Batch", "BufferState", "ReplayBuffer", "TD3Settings", "TD3State"]
