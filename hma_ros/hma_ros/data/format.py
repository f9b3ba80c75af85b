"""On-disk dataset of one embodiment: raw memory-mapped arrays plus a validated metadata JSON.

Layout of ``<root>/<embodiment>/``::

    metadata.json   format version, embodiment spec (rate, action dims, names, stats), image
                    size, frame_every, episode lengths, the shape of every array
    actions.f32     (N, action_dim) float32, raw actions at the native control rate
    episode.i32     (N,) int32, the episode id of every action row (0, 1, ...)
    frames.u8       (F, H, W, 3) uint8 RGB, one frame every ``frame_every`` action rows
    tokens/<tokenizer_id>.i32 | .f32   optional, (F, h, w) token ids or (F, h, w, C) latents

Frames are stored at ``control_hz / frame_every``, not at the control rate: the model only
ever looks at 2 Hz frames, and rendering (or storing) every 20-40 Hz control step would cost
10-20x for nothing. ``frame_every`` divides ``stride`` and every episode length is a multiple
of it, so row ``r`` has a frame exactly when ``r % frame_every == 0`` and it is
``frames[r // frame_every]``: the observation *before* action ``r`` is applied.

Writes are append-only: rows go to the end of the raw files first, then ``metadata.json``
is replaced atomically. A crash in between leaves files longer than the metadata says;
opening for append truncates them back, opening for reading ignores nothing and reports it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hma_ros.model.config import MODEL_HZ, EmbodimentSpec

log = logging.getLogger(__name__)

FORMAT_NAME = "hma_ros.dataset"
FORMAT_VERSION = 1
METADATA = "metadata.json"
_ARRAYS = {  # name -> (file, dtype)
    "actions": ("actions.f32", np.float32),
    "episode": ("episode.i32", np.int32),
    "frames": ("frames.u8", np.uint8),
}
_TOKEN_KINDS = {"discrete": (".i32", np.int32), "continuous": (".f32", np.float32)}
_TOKENIZER_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


class DatasetError(ValueError):
    """A dataset folder that cannot be read or written as asked; the message says why."""


@dataclass
class _RunningStats:
    """Per-dimension count/mean/M2 (Chan et al.'s parallel update), exact under appends."""

    count: int
    mean: np.ndarray  # (A,) float64
    m2: np.ndarray  # (A,) float64

    @classmethod
    def empty(cls, dim: int) -> _RunningStats:
        return cls(0, np.zeros(dim), np.zeros(dim))

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64)
        n = x.shape[0]
        if n == 0:
            return
        mean_b = x.mean(axis=0)
        m2_b = ((x - mean_b) ** 2).sum(axis=0)
        total = self.count + n
        delta = mean_b - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2_b + delta**2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> np.ndarray:
        std = np.sqrt(self.m2 / max(self.count, 1))
        # A dimension that never moves (an unused gripper) would divide by zero in the stem.
        return np.where(std < 1e-6, 1.0, std)

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean.tolist(), "m2": self.m2.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> _RunningStats:
        return cls(int(d["count"]), np.asarray(d["mean"], np.float64), np.asarray(d["m2"], np.float64))


def _atomic_write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class EmbodimentDataset:
    """One embodiment's dataset folder. Use :meth:`create` or :meth:`open`, not the constructor.

    Arrays (``frames``, ``actions``, ``episode``) are read-only ``np.memmap`` views (or empty
    arrays before the first episode). ``spec`` is the :class:`EmbodimentSpec` with the action
    statistics of everything written so far.
    """

    def __init__(self, folder: Path, meta: dict[str, Any], writable: bool):
        self.folder = folder
        self._meta = meta
        self._writable = writable
        self._stats = _RunningStats.from_dict(meta["action_stats"])
        self.actions = self.episode = self.frames = np.zeros(0)  # mapped once validated

    # ---------------------------------------------------------------- construction
    @classmethod
    def create(
        cls,
        folder: str | os.PathLike,
        name: str,
        action_dim: int,
        control_hz: float,
        image_size: tuple[int, int] = (64, 64),
        frame_every: int = 1,
        action_names: tuple[str, ...] | list[str] = (),
        source: dict[str, Any] | None = None,
        exist_ok: bool = False,
    ) -> EmbodimentDataset:
        """Create an empty dataset (or open an existing one for append when ``exist_ok``).

        With ``exist_ok`` an existing folder must describe the same embodiment (name,
        action_dim, control_hz, image size, frame_every), else :class:`DatasetError`.
        """
        folder = Path(folder)
        spec = EmbodimentSpec(name, int(action_dim), float(control_hz), action_names=tuple(action_names))
        image_size = (int(image_size[0]), int(image_size[1]))
        if frame_every < 1 or spec.stride % frame_every:
            raise DatasetError(
                f"{folder}: frame_every={frame_every} must be >= 1 and divide the stride "
                f"{spec.stride} (= control_hz {control_hz} / {MODEL_HZ} Hz)"
            )
        if (folder / METADATA).exists():
            if not exist_ok:
                raise DatasetError(f"{folder}: a dataset already exists here (pass exist_ok to append)")
            ds = cls.open(folder, writable=True)
            want = {
                "name": name,
                "action_dim": int(action_dim),
                "control_hz": float(control_hz),
                "image_size": list(image_size),
                "frame_every": int(frame_every),
            }
            have = {
                "name": ds.spec.name,
                "action_dim": ds.spec.action_dim,
                "control_hz": ds.spec.control_hz,
                "image_size": list(ds.image_size),
                "frame_every": ds.frame_every,
            }
            if want != have:
                raise DatasetError(f"{folder}: existing dataset is {have}, asked for {want}")
            return ds
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "embodiment": spec.to_dict(),
            "image_size": list(image_size),
            "frame_every": int(frame_every),
            "num_rows": 0,
            "num_frames": 0,
            "num_episodes": 0,
            "episode_lengths": [],
            "episode_info": [],
            "action_stats": _RunningStats.empty(spec.action_dim).to_dict(),
            "arrays": {},
            "tokenized": {},
            "source": dict(source or {}),
        }
        for arr in _ARRAYS.values():
            (folder / arr[0]).write_bytes(b"")
        ds = cls(folder, meta, writable=True)
        ds._write_meta()
        ds._map_arrays()
        return ds

    @classmethod
    def open(cls, folder: str | os.PathLike, writable: bool = False, check_values: bool = True) -> EmbodimentDataset:
        """Open and validate a dataset folder; raises :class:`DatasetError` saying what is wrong."""
        folder = Path(folder)
        path = folder / METADATA
        if not path.is_file():
            raise DatasetError(f"{folder}: missing {METADATA} (not a dataset folder?)")
        try:
            meta = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}: not valid JSON ({e})") from e
        if meta.get("format") != FORMAT_NAME:
            raise DatasetError(f"{path}: format is {meta.get('format')!r}, expected {FORMAT_NAME!r}")
        if meta.get("format_version") != FORMAT_VERSION:
            raise DatasetError(
                f"{path}: format_version {meta.get('format_version')!r} is not supported (this code reads "
                f"{FORMAT_VERSION}); regenerate or convert the dataset"
            )
        missing = [
            k
            for k in ("embodiment", "image_size", "frame_every", "num_rows", "episode_lengths", "action_stats")
            if k not in meta
        ]
        if missing:
            raise DatasetError(f"{path}: metadata lacks {missing}")
        try:
            EmbodimentSpec.from_dict(meta["embodiment"])
        except (TypeError, ValueError) as e:
            raise DatasetError(f"{path}: bad embodiment: {e}") from e
        ds = cls(folder, meta, writable=writable)
        if writable:
            ds.repair()
        ds.validate(check_values=check_values)
        return ds

    # ---------------------------------------------------------------- properties
    @property
    def spec(self) -> EmbodimentSpec:
        e = dict(self._meta["embodiment"])
        if self._stats.count:
            e["action_mean"] = tuple(self._stats.mean.tolist())
            e["action_std"] = tuple(self._stats.std.tolist())
        return EmbodimentSpec.from_dict(e)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self._meta["image_size"])

    @property
    def frame_every(self) -> int:
        return int(self._meta["frame_every"])

    @property
    def num_rows(self) -> int:
        return int(self._meta["num_rows"])

    @property
    def num_frames(self) -> int:
        return self.num_rows // self.frame_every

    @property
    def num_episodes(self) -> int:
        return len(self._meta["episode_lengths"])

    @property
    def episode_lengths(self) -> list[int]:
        """Action rows per episode."""
        return list(self._meta["episode_lengths"])

    @property
    def episode_starts(self) -> np.ndarray:
        """First row of every episode, (E,) int64."""
        return np.concatenate([[0], np.cumsum(self.episode_lengths)[:-1]]).astype(np.int64)[: self.num_episodes]

    @property
    def episode_info(self) -> list[dict[str, Any]]:
        return list(self._meta.get("episode_info", []))

    @property
    def source(self) -> dict[str, Any]:
        return dict(self._meta.get("source", {}))

    @property
    def tokenizers(self) -> dict[str, dict[str, Any]]:
        """Tokenised copies of the frames, by tokenizer id."""
        return dict(self._meta.get("tokenized", {}))

    @property
    def metadata(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._meta))

    def __repr__(self) -> str:
        s = self.spec
        return (
            f"EmbodimentDataset({str(self.folder)!r}, {s.name}, {self.num_episodes} episodes, {self.num_rows} rows "
            f"at {s.control_hz:g} Hz, {self.num_frames} frames {self.image_size})"
        )

    # ---------------------------------------------------------------- arrays
    def _shapes(self) -> dict[str, tuple[int, ...]]:
        h, w = self.image_size
        return {
            "actions": (self.num_rows, int(self._meta["embodiment"]["action_dim"])),
            "episode": (self.num_rows,),
            "frames": (self.num_frames, h, w, 3),
        }

    def _map(self, file: str, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        if math.prod(shape) == 0:
            return np.zeros(shape, dtype)
        return np.memmap(self.folder / file, dtype=dtype, mode="r", shape=shape)

    def _map_arrays(self) -> None:
        shapes = self._shapes()
        self.actions = self._map(_ARRAYS["actions"][0], np.float32, shapes["actions"])
        self.episode = self._map(_ARRAYS["episode"][0], np.int32, shapes["episode"])
        self.frames = self._map(_ARRAYS["frames"][0], np.uint8, shapes["frames"])

    def validate(self, check_values: bool = True) -> None:
        """Check files against the metadata: presence, sizes, episode bookkeeping, NaNs."""
        lengths = self.episode_lengths
        if sum(lengths) != self.num_rows:
            raise DatasetError(
                f"{self.folder}: episode_lengths sum to {sum(lengths)} rows but num_rows is {self.num_rows}"
            )
        bad = [i for i, n in enumerate(lengths) if n <= 0 or n % self.frame_every]
        if bad:
            raise DatasetError(
                f"{self.folder}: episodes {bad[:5]} have lengths {[lengths[i] for i in bad[:5]]}, which are not "
                f"positive multiples of frame_every={self.frame_every}"
            )
        for name, shape in self._shapes().items():
            file, dtype = _ARRAYS[name]
            path = self.folder / file
            if not path.is_file():
                raise DatasetError(f"{self.folder}: missing array file {file} (expected shape {shape})")
            want = math.prod(shape) * np.dtype(dtype).itemsize
            have = path.stat().st_size
            if have != want:
                item = math.prod(shape[1:]) * np.dtype(dtype).itemsize
                raise DatasetError(
                    f"{path}: {have} bytes, expected {want} for {name} of shape {shape} {np.dtype(dtype).name} "
                    f"({have / max(item, 1):.1f} rows on disk vs {shape[0]} in metadata; an interrupted write "
                    f"is repaired by opening the dataset writable)"
                )
        meta_arrays = self._meta.get("arrays", {})
        for name, shape in self._shapes().items():
            rec = meta_arrays.get(name)
            if rec is not None and tuple(rec["shape"]) != shape:
                raise DatasetError(f"{self.folder}: metadata records {name} shape {rec['shape']}, derived {shape}")
        for tid, rec in self.tokenizers.items():
            path = self.folder / rec["file"]
            if not path.is_file():
                raise DatasetError(f"{self.folder}: tokenizer {tid!r}: missing {rec['file']}")
            want = math.prod(rec["shape"]) * np.dtype(rec["dtype"]).itemsize
            if path.stat().st_size != want:
                raise DatasetError(
                    f"{path}: {path.stat().st_size} bytes, expected {want} for shape {rec['shape']} {rec['dtype']}"
                )
        self._map_arrays()
        if check_values and self.num_rows:
            ep = np.asarray(self.episode)
            expected = np.repeat(np.arange(self.num_episodes, dtype=np.int32), lengths)
            if not np.array_equal(ep, expected):
                first = int(np.flatnonzero(ep != expected)[0])
                raise DatasetError(
                    f"{self.folder}: episode.i32 row {first} is {ep[first]}, expected {expected[first]} from "
                    f"episode_lengths"
                )
            finite = np.isfinite(np.asarray(self.actions))
            if not finite.all():
                row, dim = (int(v) for v in np.argwhere(~finite)[0])
                raise DatasetError(
                    f"{self.folder}: actions.f32 has {int((~finite).sum())} non-finite values (first at row {row}, "
                    f"dim {dim}, episode {int(ep[row])})"
                )

    # ---------------------------------------------------------------- writing
    def _write_meta(self) -> None:
        self._meta["num_frames"] = self.num_frames
        self._meta["num_episodes"] = self.num_episodes
        self._meta["action_stats"] = self._stats.to_dict()
        if self._stats.count:
            self._meta["embodiment"]["action_mean"] = self._stats.mean.tolist()
            self._meta["embodiment"]["action_std"] = self._stats.std.tolist()
        self._meta["arrays"] = {
            name: {"file": _ARRAYS[name][0], "dtype": np.dtype(_ARRAYS[name][1]).name, "shape": list(shape)}
            for name, shape in self._shapes().items()
        }
        _atomic_write_json(self.folder / METADATA, self._meta)

    def _require_writable(self) -> None:
        if not self._writable:
            raise DatasetError(f"{self.folder}: opened read-only; use EmbodimentDataset.open(..., writable=True)")

    def repair(self) -> None:
        """Truncate array files that an interrupted append left longer than the metadata says."""
        self._require_writable()
        for name, shape in self._shapes().items():
            file, dtype = _ARRAYS[name]
            path = self.folder / file
            want = math.prod(shape) * np.dtype(dtype).itemsize
            if path.is_file() and path.stat().st_size > want:
                log.warning("%s: truncating %d bytes left by an interrupted write", path, path.stat().st_size - want)
                with open(path, "r+b") as f:
                    f.truncate(want)

    def append_episode(self, frames: np.ndarray, actions: np.ndarray, info: dict[str, Any] | None = None) -> int:
        """Append one episode; returns its id. ``actions`` (L, A) at the native rate, ``frames``
        (L / frame_every, H, W, 3) uint8, frame ``k`` observed before action ``k * frame_every``."""
        self._require_writable()
        actions = np.asarray(actions, np.float32)
        frames = np.asarray(frames)
        A = self.spec.action_dim
        h, w = self.image_size
        L = actions.shape[0] if actions.ndim == 2 else -1
        if actions.ndim != 2 or actions.shape[1] != A or L == 0:
            raise DatasetError(f"{self.folder}: actions must be (L>0, {A}), got {actions.shape}")
        if L % self.frame_every:
            raise DatasetError(
                f"{self.folder}: episode of {L} rows is not a multiple of frame_every={self.frame_every}"
            )
        if frames.dtype != np.uint8 or frames.shape != (L // self.frame_every, h, w, 3):
            raise DatasetError(
                f"{self.folder}: frames must be uint8 {(L // self.frame_every, h, w, 3)} for {L} actions with "
                f"frame_every={self.frame_every}, got {frames.dtype} {frames.shape}"
            )
        if not np.isfinite(actions).all():
            row = int(np.argwhere(~np.isfinite(actions))[0][0])
            raise DatasetError(f"{self.folder}: episode has non-finite actions (first at row {row})")
        self.repair()
        ep_id = self.num_episodes
        for name, arr in (
            ("actions", actions),
            ("episode", np.full(L, ep_id, np.int32)),
            ("frames", np.ascontiguousarray(frames)),
        ):
            with open(self.folder / _ARRAYS[name][0], "ab") as f:
                f.write(arr.tobytes())
        self._stats.update(actions)
        self._meta["num_rows"] = self.num_rows + L
        self._meta["episode_lengths"].append(int(L))
        self._meta.setdefault("episode_info", []).append(dict(info or {}))
        self._write_meta()
        self._map_arrays()
        return ep_id

    def update_source(self, **fields: Any) -> None:
        self._require_writable()
        self._meta.setdefault("source", {}).update(fields)
        self._write_meta()

    # ---------------------------------------------------------------- tokens
    def write_tokens(self, tokenizer_id: str, tokens: np.ndarray, kind: str = "discrete") -> None:
        """Store a tokenizer's output for every frame: (F, h, w) ids or (F, h, w, C) latents.

        Replaces an earlier array of the same tokenizer id.
        """
        self._require_writable()
        if not _TOKENIZER_ID.match(tokenizer_id):
            raise DatasetError(f"tokenizer id {tokenizer_id!r} must match {_TOKENIZER_ID.pattern}")
        if kind not in _TOKEN_KINDS:
            raise DatasetError(f"kind must be one of {list(_TOKEN_KINDS)}, got {kind!r}")
        suffix, dtype = _TOKEN_KINDS[kind]
        tokens = np.asarray(tokens)
        ndim = 3 if kind == "discrete" else 4
        if tokens.ndim != ndim or tokens.shape[0] != self.num_frames:
            raise DatasetError(
                f"{self.folder}: {kind} tokens must have {ndim} dims with {self.num_frames} frames first, "
                f"got {tokens.shape}"
            )
        if kind == "continuous" and not np.isfinite(tokens).all():
            raise DatasetError(f"{self.folder}: latents for {tokenizer_id!r} contain non-finite values")
        file = f"tokens/{tokenizer_id}{suffix}"
        (self.folder / "tokens").mkdir(exist_ok=True)
        tmp = self.folder / (file + ".tmp")
        tokens.astype(dtype).tofile(tmp)
        os.replace(tmp, self.folder / file)
        self._meta.setdefault("tokenized", {})[tokenizer_id] = {
            "kind": kind,
            "file": file,
            "dtype": np.dtype(dtype).name,
            "shape": list(tokens.shape),
        }
        self._write_meta()

    def tokens(self, tokenizer_id: str) -> np.ndarray:
        """Memory-mapped tokens/latents of ``tokenizer_id``; they must cover every frame."""
        recs = self.tokenizers
        if tokenizer_id not in recs:
            raise DatasetError(f"{self.folder}: not tokenised with {tokenizer_id!r}; available: {sorted(recs)}")
        rec = recs[tokenizer_id]
        if rec["shape"][0] != self.num_frames:
            raise DatasetError(
                f"{self.folder}: tokens of {tokenizer_id!r} cover {rec['shape'][0]} frames but the dataset has "
                f"{self.num_frames} (episodes were appended after tokenising); re-run the tokenizer"
            )
        return np.memmap(self.folder / rec["file"], dtype=rec["dtype"], mode="r", shape=tuple(rec["shape"]))


def find_datasets(root: str | os.PathLike) -> dict[str, Path]:
    """Embodiment name -> folder for every dataset folder directly under ``root``."""
    root = Path(root)
    out: dict[str, Path] = {}
    for meta in sorted(root.glob(f"*/{METADATA}")):
        name = json.loads(meta.read_text()).get("embodiment", {}).get("name", meta.parent.name)
        out[name] = meta.parent
    return out
