"""Import recordings into the dataset format: rosbag2 MCAP, LeRobot v3, robomimic HDF5.

Every importer appends episodes to ``<out_root>/<embodiment>/`` (created on first use) and
fits images with :func:`hma_ros.runtime.image.fit_image`, the path live camera input takes.

- MCAP (what a ROS user records): the robot config says which topics to read
  (``camera.topic``, ``action.topic``, ``action.names``, ``control_hz``). Actions are
  resampled to the native rate by zero-order hold of the last command (a command topic's
  meaning: it holds until the next one); each stored frame is the camera image closest in
  time to its row. One recording = one episode.
- LeRobot v3 (``meta/info.json``, parquet data, multi-episode mp4 videos): ``fps`` is the
  control rate, every row has an action and a frame.
- robomimic HDF5 (``data/demo_*/actions``, ``data/demo_*/obs/<camera>``): the rate comes
  from ``env_args`` (robosuite ``control_freq``) unless given.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from hma_ros.data.format import DatasetError, EmbodimentDataset
from hma_ros.runtime.image import ImageFormatError, decode_image, fit_image

log = logging.getLogger(__name__)

IMAGE_SIZE = (64, 64)


# ------------------------------------------------------------------------------------ MCAP
def image_msg_to_rgb(msg: Any) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a decoded ``sensor_msgs/Image`` (the codec the node uses)."""
    try:
        return decode_image(msg)
    except ImageFormatError as e:
        raise DatasetError(str(e)) from e


def _divisor_at_most(stride: int, limit: float) -> int:
    return max(d for d in range(1, stride + 1) if stride % d == 0 and d <= max(limit, 1))


def import_mcap(
    bag: str | os.PathLike,
    robot: Any,
    out_root: str | os.PathLike,
    image_size: tuple[int, int] = IMAGE_SIZE,
    frame_every: int | None = None,
    max_frame_offset_s: float | None = None,
) -> EmbodimentDataset:
    """Append a rosbag2 MCAP recording as one episode of ``robot``'s embodiment.

    Args:
        robot: a :class:`hma_ros.runtime.robot_config.RobotConfig`, a robot name or a YAML path.
        frame_every: control rows per stored frame; default: the largest divisor of the
            stride that does not exceed ``control_hz / camera_hz`` (20 Hz / 10 Hz -> 2).
        max_frame_offset_s: a row whose nearest image is further away than this is an error
            (default: one camera period).
    """
    from hma_ros.data.rosbag import iter_messages
    from hma_ros.runtime.robot_config import RobotConfig, load_robot_config

    cfg = robot if isinstance(robot, RobotConfig) else load_robot_config(robot)
    names = list(cfg.action.names)
    cam_t, cam_msgs, act_t, act_v = [], [], [], []
    for topic, t_ns, msg in iter_messages(bag, [cfg.camera.topic, cfg.action.topic]):
        if topic == cfg.camera.topic:
            cam_t.append(t_ns)
            cam_msgs.append(msg)
        else:
            pos = list(msg.position)
            if msg.name:
                index = {n: i for i, n in enumerate(msg.name)}
                missing = [n for n in names if n not in index]
                if missing:
                    raise DatasetError(f"{bag}: {cfg.action.topic} message lacks joints {missing} (has {msg.name})")
                pos = [pos[index[n]] for n in names]
            elif len(pos) != len(names):
                raise DatasetError(f"{bag}: {cfg.action.topic} has {len(pos)} positions, config names {len(names)}")
            act_t.append(t_ns)
            act_v.append(pos)
    for what, ts, topic in (("camera", cam_t, cfg.camera.topic), ("action", act_t, cfg.action.topic)):
        if len(ts) < 2:
            raise DatasetError(f"{bag}: {len(ts)} {what} messages on {topic}; need at least 2")
    cam_t, act_t = np.asarray(cam_t, np.int64), np.asarray(act_t, np.int64)
    order = np.argsort(cam_t, kind="stable")
    cam_t, cam_msgs = cam_t[order], [cam_msgs[i] for i in order]
    order = np.argsort(act_t, kind="stable")
    act_t, act_v = act_t[order], np.asarray(act_v, np.float64)[order]

    hz, stride = cfg.control_hz, cfg.stride
    cam_period = float(np.median(np.diff(cam_t))) / 1e9
    fe = frame_every or _divisor_at_most(stride, round(hz * cam_period, 3))
    tol = max_frame_offset_s if max_frame_offset_s is not None else cam_period
    t0 = max(cam_t[0], act_t[0])
    t_end = min(cam_t[-1] + cam_period / 2 * 1e9, act_t[-1] + 1e9 / hz)
    rows = int((t_end - t0) * hz / 1e9)
    rows -= rows % fe
    if rows < fe:
        raise DatasetError(f"{bag}: camera and action topics overlap for less than one frame")
    t_rows = t0 + np.round(np.arange(rows) * 1e9 / hz).astype(np.int64)
    actions = act_v[np.searchsorted(act_t, t_rows, side="right") - 1]  # zero-order hold
    t_frames = t_rows[::fe]
    right = np.clip(np.searchsorted(cam_t, t_frames), 1, len(cam_t) - 1)
    nearest = np.where(t_frames - cam_t[right - 1] <= cam_t[right] - t_frames, right - 1, right)
    offset = np.abs(cam_t[nearest] - t_frames) / 1e9
    if offset.max() > tol:
        k = int(offset.argmax())
        raise DatasetError(f"{bag}: no camera image within {tol:.3f} s of frame {k} (nearest {offset[k]:.3f} s)")
    frames = np.stack([fit_image(image_msg_to_rgb(cam_msgs[i]), image_size) for i in nearest])
    ds = EmbodimentDataset.create(
        Path(out_root) / cfg.embodiment,
        cfg.embodiment,
        len(names),
        hz,
        image_size=image_size,
        frame_every=fe,
        action_names=names,
        source={"importer": "mcap", "robot": cfg.robot},
        exist_ok=True,
    )
    ds.append_episode(frames, actions.astype(np.float32), {"source": str(bag), "start_ns": int(t0)})
    log.info("%s: %d rows at %g Hz, %d frames (every %d rows) -> %s", bag, rows, hz, len(frames), fe, ds.folder)
    return ds


# ------------------------------------------------------------------------------ LeRobot v3
def _feature_names(feature: dict[str, Any], dim: int) -> list[str]:
    names = feature.get("names")
    if isinstance(names, dict):  # {"motors": [...]} in some datasets
        names = [n for v in names.values() for n in (v if isinstance(v, list) else [v])]
    if isinstance(names, list) and len(names) == dim and all(isinstance(n, str) for n in names):
        return names
    return [f"a{i}" for i in range(dim)]


def _decode_video(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """All frames of a video as (N, H, W, 3) uint8 and their timestamps in seconds."""
    import av

    frames, times = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.pts * stream.time_base) if frame.pts is not None else float(frame.time))
    if not frames:
        raise DatasetError(f"{path}: no video frames")
    return np.stack(frames), np.asarray(times)


def import_lerobot(
    root: str | os.PathLike,
    out_root: str | os.PathLike,
    embodiment: str,
    camera_key: str | None = None,
    action_key: str = "action",
    image_size: tuple[int, int] = IMAGE_SIZE,
    episodes: list[int] | None = None,
) -> EmbodimentDataset:
    """Append the episodes of a local LeRobot v3 dataset (parquet + mp4)."""
    import pyarrow.parquet as pq

    root = Path(root)
    info_path = root / "meta" / "info.json"
    if not info_path.is_file():
        raise DatasetError(f"{root}: missing meta/info.json (not a LeRobot dataset?)")
    info = json.loads(info_path.read_text())
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3"):
        raise DatasetError(f"{root}: codebase_version {version!r}; only LeRobot v3 datasets are supported")
    features = info["features"]
    videos = [k for k, f in features.items() if f.get("dtype") == "video"]
    key = camera_key or (videos[0] if videos else None)
    if key not in videos:
        raise DatasetError(f"{root}: camera {key!r} is not a video feature; video features: {videos}")
    if action_key not in features:
        raise DatasetError(f"{root}: no feature {action_key!r}; features: {sorted(features)}")
    fps = float(info["fps"])
    action_dim = int(np.prod(features[action_key]["shape"]))
    ep_table = pq.read_table(sorted((root / "meta" / "episodes").rglob("*.parquet"))).to_pylist()
    ep_table.sort(key=lambda e: e["episode_index"])
    if episodes is not None:
        ep_table = [e for e in ep_table if e["episode_index"] in set(episodes)]
    ds = EmbodimentDataset.create(
        Path(out_root) / embodiment,
        embodiment,
        action_dim,
        fps,
        image_size=image_size,
        frame_every=1,
        action_names=_feature_names(features[action_key], action_dim),
        source={"importer": "lerobot_v3", "root": str(root), "camera": key},
        exist_ok=True,
    )
    data_cache: dict[tuple[int, int], dict[str, Any]] = {}
    video_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    for ep in ep_table:
        dkey = (int(ep["data/chunk_index"]), int(ep["data/file_index"]))
        if dkey not in data_cache:
            data_cache.clear()
            path = root / info["data_path"].format(chunk_index=dkey[0], file_index=dkey[1])
            data_cache[dkey] = pq.read_table(path, columns=[action_key, "timestamp", "episode_index", "frame_index"])
        table = data_cache[dkey]
        ep_idx = np.asarray(table.column("episode_index"))
        sel = np.flatnonzero(ep_idx == ep["episode_index"])
        sel = sel[np.argsort(np.asarray(table.column("frame_index"))[sel], kind="stable")]
        actions = np.asarray(table.column(action_key).to_pylist(), np.float32)[sel].reshape(len(sel), action_dim)
        ts = np.asarray(table.column("timestamp"))[sel]
        vkey = (int(ep[f"videos/{key}/chunk_index"]), int(ep[f"videos/{key}/file_index"]))
        if vkey not in video_cache:
            video_cache.clear()
            path = root / info["video_path"].format(video_key=key, chunk_index=vkey[0], file_index=vkey[1])
            video_cache[vkey] = _decode_video(path)
        vframes, vtimes = video_cache[vkey]
        want = float(ep[f"videos/{key}/from_timestamp"]) + ts
        idx = np.abs(vtimes[None, :] - want[:, None]).argmin(axis=1)
        if np.abs(vtimes[idx] - want).max() > 0.5 / fps:
            raise DatasetError(f"{root}: episode {ep['episode_index']}: video frames do not match the timestamps")
        ds.append_episode(fit_image(vframes[idx], image_size), actions, {"source_episode": int(ep["episode_index"])})
    log.info("%s: imported %d episodes -> %s", root, len(ep_table), ds.folder)
    return ds


# ------------------------------------------------------------------------------ robomimic
def import_robomimic(
    path: str | os.PathLike,
    out_root: str | os.PathLike,
    embodiment: str,
    camera: str = "agentview_image",
    control_hz: float | None = None,
    image_size: tuple[int, int] = IMAGE_SIZE,
    flip_vertical: bool = False,
) -> EmbodimentDataset:
    """Append every ``data/demo_*`` of a robomimic-style HDF5 file.

    ``flip_vertical``: robosuite datasets recorded with the OpenGL image convention are
    upside down; flip them to match frames rendered by :mod:`hma_ros.sim`.
    """
    import h5py

    with h5py.File(path, "r") as f:
        if "data" not in f:
            raise DatasetError(f"{path}: no 'data' group (not a robomimic file?)")
        data = f["data"]
        if control_hz is None:
            env_args = json.loads(data.attrs.get("env_args", "{}") or "{}")
            control_hz = env_args.get("env_kwargs", {}).get("control_freq")
            if control_hz is None:
                raise DatasetError(f"{path}: env_args has no env_kwargs.control_freq; pass control_hz")
        demos = sorted(data.keys(), key=lambda k: int(re.sub(r"\D", "", k) or 0))
        if not demos:
            raise DatasetError(f"{path}: no demos under data/")
        action_dim = int(data[demos[0]]["actions"].shape[1])
        ds = EmbodimentDataset.create(
            Path(out_root) / embodiment,
            embodiment,
            action_dim,
            float(control_hz),
            image_size=image_size,
            frame_every=1,
            source={"importer": "robomimic", "file": str(path), "camera": camera},
            exist_ok=True,
        )
        for name in demos:
            demo = data[name]
            if camera not in demo["obs"]:
                raise DatasetError(f"{path}: {name} has no obs/{camera}; obs: {sorted(demo['obs'])}")
            frames = np.asarray(demo["obs"][camera])
            actions = np.asarray(demo["actions"], np.float32)
            if len(frames) != len(actions):
                raise DatasetError(f"{path}: {name} has {len(frames)} frames and {len(actions)} actions")
            if flip_vertical:
                frames = frames[:, ::-1]
            ds.append_episode(fit_image(np.ascontiguousarray(frames), image_size), actions, {"source_demo": name})
    log.info("%s: imported %d demos -> %s", path, len(demos), ds.folder)
    return ds


# ------------------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> None:
    """``python -m hma_ros.data.importers {mcap,lerobot,robomimic} SOURCE... --out ROOT``"""
    import argparse

    p = argparse.ArgumentParser(prog="python -m hma_ros.data.importers", description="Import recordings.")
    sub = p.add_subparsers(dest="kind", required=True)
    m = sub.add_parser("mcap", help="rosbag2 MCAP recordings, one episode each")
    m.add_argument("bags", nargs="+")
    m.add_argument("--robot", required=True, help="robot name (config/robots/<robot>.yaml) or YAML path")
    m.add_argument("--frame-every", type=int, default=None)
    lr = sub.add_parser("lerobot", help="a local LeRobot v3 dataset folder")
    lr.add_argument("root")
    lr.add_argument("--embodiment", required=True)
    lr.add_argument("--camera", default=None, help="video feature key; default: the first")
    lr.add_argument("--action-key", default="action")
    rm = sub.add_parser("robomimic", help="a robomimic-style HDF5 file")
    rm.add_argument("file")
    rm.add_argument("--embodiment", required=True)
    rm.add_argument("--camera", default="agentview_image")
    rm.add_argument("--control-hz", type=float, default=None)
    rm.add_argument("--flip-vertical", action="store_true")
    for sp in (m, lr, rm):
        sp.add_argument("--out", required=True, help="dataset root; writes <out>/<embodiment>/")
        sp.add_argument("--size", type=int, nargs=2, default=list(IMAGE_SIZE), metavar=("H", "W"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    size = tuple(args.size)
    if args.kind == "mcap":
        for bag in args.bags:
            ds = import_mcap(bag, args.robot, args.out, size, args.frame_every)
    elif args.kind == "lerobot":
        ds = import_lerobot(args.root, args.out, args.embodiment, args.camera, args.action_key, size)
    else:
        ds = import_robomimic(
            args.file, args.out, args.embodiment, args.camera, args.control_hz, size, args.flip_vertical
        )
    log.info("%r", ds)


if __name__ == "__main__":
    main()
