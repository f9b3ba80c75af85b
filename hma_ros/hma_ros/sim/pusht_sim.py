"""gym-pusht (2-D pusher pushing a T onto a goal pose) behind the same small interface.

The action is the pusher's target position (x, y) in the 512x512 workspace, held by the
environment's PD controller at 10 Hz. Rendered at 128x128 from the environment's own
drawing (no OpenGL).
"""

from __future__ import annotations

import numpy as np

import hma_ros.sim  # noqa: F401  (SDL dummy video driver before pygame loads)
from hma_ros.sim.embodiments import SimEmbodiment

RENDER_SIZE = 128


class PushTSim:
    def __init__(self, emb: SimEmbodiment, task: str = "PushT", render_size: int = RENDER_SIZE):
        from gym_pusht.envs.pusht import PushTEnv

        if task != "PushT":
            raise ValueError(f"pusht only has task 'PushT', got {task!r}")
        self.emb = emb
        self.task = task
        # obs_type="state": no image per step; we render only the frames we store.
        self.env = PushTEnv(obs_type="state", observation_width=render_size, observation_height=render_size)
        self._info: dict[str, np.ndarray] = {}
        self._success = False

    def reset(self, seed: int) -> None:
        _, self._info = self.env.reset(seed=seed % 2**32)
        self._success = False

    def step(self, action: np.ndarray) -> None:
        action = np.asarray(action, np.float64)
        if action.shape != (2,):
            raise ValueError(f"pusht: action must have shape (2,), got {action.shape}")
        _, _, terminated, _, self._info = self.env.step(np.clip(action, 0.0, 512.0))
        self._success |= bool(terminated)

    def render(self) -> np.ndarray:
        return np.ascontiguousarray(self.env._render(visualize=False))

    def close(self) -> None:
        self.env.close()

    def success(self) -> bool:
        return self._success

    def agent_pos(self) -> np.ndarray:
        return np.asarray(self._info["pos_agent"], np.float64)

    def block_pose(self) -> np.ndarray:
        return np.asarray(self._info["block_pose"], np.float64)

    def goal_pose(self) -> np.ndarray:
        return np.asarray(self._info["goal_pose"], np.float64)
