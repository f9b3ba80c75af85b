"""Ground truth for actions nobody recorded: re-simulate a window under perturbed actions.

Datasets written by :mod:`hma_ros.sim.generate` store every episode's seed and task, and a
replay from that seed under the recorded actions reproduces the stored frames exactly. So for
any window we can change the actions from some step on, replay the episode up to the end of
the window, and read off what the robot would really have seen: the truth that PSNR* and
perplexity* compare a world model's rollout against (issue #5; DESIGN.md §4).

Every replay also re-renders the window's context frames, which the perturbation does not
touch; if they differ from the stored frames the simulator is not the one that wrote the data
(another robosuite or mujoco version) and :class:`ResimulationError` says so, instead of
scoring the model against a different world.
"""

from __future__ import annotations

import numpy as np

from hma_ros.data.format import EmbodimentDataset
from hma_ros.eval.metrics import psnr as metric_psnr

GENERATOR = "hma_ros.sim.generate"
MIN_CONTEXT_PSNR = 40.0  # dB: re-rendered context frames closer than this count as identical


class ResimulationError(ValueError):
    """The dataset cannot be re-simulated, or the simulator does not reproduce it."""


def resim_unavailable(ds: EmbodimentDataset) -> str | None:
    """Why ``ds`` cannot be re-simulated, or None if it can."""
    if ds.source.get("generator") != GENERATOR:
        return f"{ds.folder} was not written by {GENERATOR} (source {ds.source or 'unknown'}): no simulator to replay"
    missing = [i for i, info in enumerate(ds.episode_info) if not {"seed", "task"} <= set(info or {})]
    if missing:
        return f"{ds.folder}: episodes {missing[:5]} lack the seed/task a replay needs"
    return None


def perturb_step_actions(
    step_actions: np.ndarray, std: np.ndarray, sigma: float, rng: np.random.Generator
) -> np.ndarray:
    """Shift each 2 Hz step's actions by ``sigma`` action stds, drawn N(0, 1) per step and
    dimension and held over the step's control rows. ``step_actions`` (K, stride * A) raw;
    ``std`` (A,) the embodiment's action std. Returns a new (K, stride * A) float32 array."""
    k, width = step_actions.shape
    a = std.shape[0]
    if width % a:
        raise ValueError(f"step width {width} is not a multiple of the action dim {a}")
    shift = rng.standard_normal((k, 1, a)) * sigma * std  # held over the stride rows
    out = step_actions.reshape(k, width // a, a) + shift
    return out.reshape(k, width).astype(np.float32)


class Resimulator:
    """Replays windows of one simulated dataset under other actions; one simulator per task,
    made on first use. Use as a context manager (or call :meth:`close`)."""

    def __init__(self, ds: EmbodimentDataset):
        why = resim_unavailable(ds)
        if why:
            raise ResimulationError(why)
        from hma_ros.sim.embodiments import get_embodiment

        self.ds = ds
        self.emb = get_embodiment(ds.spec.name)  # KeyError: not an embodiment this package simulates
        self._sims: dict[str, object] = {}

    def window_frames(
        self, start_row: int, num_frames: int, first_changed: int, step_actions: np.ndarray
    ) -> np.ndarray:
        """Frames (num_frames, H, W, 3) uint8 of the window starting at action row ``start_row``
        when its 2 Hz steps ``first_changed, first_changed + 1, ...`` execute ``step_actions``
        (K, stride * A) instead of the recorded ones. The frames of steps up to
        ``first_changed`` are re-rendered too and checked against the stored ones."""
        from hma_ros.sim.generate import replay_episode

        ds, stride, fe = self.ds, self.ds.spec.stride, self.ds.frame_every
        ep = int(ds.episode[start_row])
        ep_start = int(ds.episode_starts[ep])
        end = start_row + (num_frames - 1) * stride  # row of the last frame
        if end >= ep_start + ds.episode_lengths[ep]:
            raise ResimulationError(f"window at row {start_row} with {num_frames} frames runs past episode {ep}")
        k = step_actions.shape[0]
        if first_changed + k > num_frames - 1:
            raise ResimulationError(f"{k} changed steps from step {first_changed} run past the window's last frame")
        actions = np.array(ds.actions[ep_start : end + 1], np.float64)  # the last row only ends the replay
        row0 = start_row - ep_start + first_changed * stride
        actions[row0 : row0 + k * stride] = step_actions.reshape(k * stride, -1)
        info = ds.episode_info[ep]
        sim = self._sim(info["task"])
        frames = replay_episode(sim, int(info["seed"]), actions, fe, image_size=ds.image_size)
        rows = start_row - ep_start + np.arange(num_frames) * stride
        out = frames[rows // fe]
        self._check_unchanged(out[: first_changed + 1], (start_row + np.arange(first_changed + 1) * stride) // fe)
        return out

    def _check_unchanged(self, replayed: np.ndarray, frame_idx: np.ndarray) -> None:
        stored = np.asarray(self.ds.frames[frame_idx])
        W = stored.shape[-2]  # one PSNR over all the frames: stack them into one tall image
        psnr = float(metric_psnr(replayed.reshape(1, -1, W, 3), stored.reshape(1, -1, W, 3))[0])
        if psnr < MIN_CONTEXT_PSNR:
            raise ResimulationError(
                f"re-simulating {self.ds.folder} does not reproduce its stored frames (PSNR {psnr:.1f} dB "
                f"< {MIN_CONTEXT_PSNR:g}): the simulator differs from the one that wrote the data"
            )

    def _sim(self, task: str):
        if task not in self._sims:
            from hma_ros.sim.generate import make_sim

            self._sims[task] = make_sim(self.emb, task)
        return self._sims[task]

    def close(self) -> None:
        for sim in self._sims.values():
            sim.close()
        self._sims.clear()

    def __enter__(self) -> Resimulator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
