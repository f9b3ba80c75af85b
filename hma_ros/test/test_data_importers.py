"""Importers (rosbag2 MCAP, LeRobot v3, robomimic HDF5), each on a file the test writes."""

import json

import numpy as np
import pytest

from hma_ros.data.format import DatasetError
from hma_ros.data.rosbag import McapWriter, image_msg, iter_messages, iter_raw, joint_state_msg, topics
from hma_ros.data.windows import WindowDataset
from hma_ros.paths import share_dir
from hma_ros.runtime.robot_config import parse_robot_config

NAMES = ["j1", "j2", "gripper"]


def _robot(hz=20.0, camera_topic="/cam", names=NAMES):
    return parse_robot_config(
        {
            "robot": "toy",
            "embodiment": "toy",
            "control_hz": hz,
            "camera": {"topic": camera_topic, "encoding": "rgb8", "width": 16, "height": 16},
            "action": {"source": "command", "topic": "/cmd", "names": list(names)},
            "model": {"checkpoint": "models/none"},
        }
    )


def _frame(k, size=16):
    img = np.zeros((size, size, 3), np.uint8)
    img[..., 0] = k  # frame number in red
    img[..., 1] = 200
    return img


def _write_bag(path, seconds=3.0, cam_hz=10, cmd_hz=20, t0=5_000_000_000, encoding="rgb8"):
    with McapWriter(path) as w:
        for k in range(int(seconds * cmd_hz)):
            t = t0 + k * 1_000_000_000 // cmd_hz + 1_000_000  # 1 ms jitter after the tick
            # names out of order: the importer must map by name
            w.write(
                "/cmd", "sensor_msgs/msg/JointState", joint_state_msg(["gripper", "j2", "j1"], [-k, 2 * k, k], t), t
            )
        for k in range(int(seconds * cam_hz)):
            t = t0 + k * 1_000_000_000 // cam_hz
            msg = image_msg(_frame(k), t)
            if encoding == "bgr8":
                msg = {**msg, "encoding": "bgr8", "data": _frame(k)[..., ::-1].tobytes()}
            w.write("/cam", "sensor_msgs/msg/Image", msg, t)
            w.write("/other", "std_msgs/msg/String", {"data": "ignored"}, t)


def test_mcap_roundtrip_and_import(tmp_path):
    from hma_ros.data.importers import import_mcap

    bag = tmp_path / "rec.mcap"
    _write_bag(bag, encoding="bgr8")
    assert topics(bag)["/cam"] == ("sensor_msgs/msg/Image", 30)
    msgs = list(iter_messages(bag, ["/cmd"]))
    assert msgs[3][2].name == ["gripper", "j2", "j1"]
    assert msgs[3][1] == 5_000_000_000 + 3 * 50_000_000 + 1_000_000  # header stamp

    ds = import_mcap(bag, _robot(), tmp_path / "out", image_size=(8, 8))
    assert ds.frame_every == 2  # 20 Hz actions, 10 Hz camera
    assert ds.spec.action_names == tuple(NAMES)
    a = np.asarray(ds.actions)
    # Rows start at the first moment both topics have data (the first command, 1 ms after the
    # first image) and tick at 20 Hz; each row holds the last command sent at or before it.
    assert a.shape[1] == 3
    k = a[:, 0]
    np.testing.assert_array_equal(k, np.arange(len(k)))
    np.testing.assert_array_equal(a[:, 1], 2 * k)
    np.testing.assert_array_equal(a[:, 2], -k)
    f = np.asarray(ds.frames)
    assert f.shape[1:] == (8, 8, 3)
    assert (f[..., 1] == 200).all()  # BGR was converted to RGB
    # frames are the images nearest each row at 10 Hz: red = frame number, consecutive
    assert np.all(np.diff(f[:, 0, 0, 0].astype(int)) == 1)
    assert WindowDataset(ds, num_frames=2)[0]["actions"].shape == (2, 30)
    # a second recording appends a second episode
    import_mcap(bag, _robot(), tmp_path / "out", image_size=(8, 8))
    assert WindowDataset(tmp_path / "out" / "toy", 2).data.num_episodes == 2


def test_mcap_errors_name_the_problem(tmp_path):
    from hma_ros.data.importers import import_mcap

    bag = tmp_path / "rec.mcap"
    _write_bag(bag)
    with pytest.raises(DatasetError, match=r"lacks joints \['elbow'\]"):
        import_mcap(bag, _robot(names=["j1", "elbow"]), tmp_path / "out")
    with pytest.raises(DatasetError, match="0 camera messages on /nope"):
        import_mcap(bag, _robot(camera_topic="/nope"), tmp_path / "out")


def test_raw_messages_are_real_ros_messages(tmp_path):
    rclpy_ser = pytest.importorskip("rclpy.serialization")
    from sensor_msgs.msg import Image, JointState

    bag = tmp_path / "rec.mcap"
    _write_bag(bag, seconds=0.5)
    raw = {m.topic: m for m in iter_raw(bag, ["/cam", "/cmd"])}
    img = rclpy_ser.deserialize_message(raw["/cam"].cdr, Image)
    assert (img.height, img.width, img.encoding) == (16, 16, "rgb8")
    js = rclpy_ser.deserialize_message(raw["/cmd"].cdr, JointState)
    assert list(js.name) == ["gripper", "j2", "j1"]
    assert raw["/cam"].msgtype == "sensor_msgs/msg/Image"


def test_bundled_franka_demo():
    from hma_ros.runtime.robot_config import load_robot_config

    bag = share_dir() / "data" / "franka_demo.mcap"
    assert bag.stat().st_size <= 5 * 2**20
    t = topics(bag)
    assert t["/camera/image_raw"][0] == "sensor_msgs/msg/Image"
    assert t["/joint_command"] == ("sensor_msgs/msg/JointState", 240)
    assert t["/joint_states"][1] == 240
    assert 100 <= t["/camera/image_raw"][1] <= 150
    cfg = load_robot_config("franka")
    _, _, first = next(iter_messages(bag, ["/joint_command"]))
    assert list(first.name) == list(cfg.action.names)


def test_bundled_franka_demo_imports(tmp_path):
    from hma_ros.data.importers import import_mcap

    ds = import_mcap(share_dir() / "data" / "franka_demo.mcap", "franka", tmp_path)
    assert ds.spec.control_hz == 20.0
    assert ds.num_rows >= 220
    assert ds.frame_every == 2
    assert len(WindowDataset(ds, num_frames=12)) > 0


def _write_lerobot(root, episodes=((12, 0), (8, 100)), fps=10, size=32):
    """A LeRobot v3 dataset: one parquet file, one mp4 holding both episodes back to back."""
    import av
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (root / "data" / "chunk-000").mkdir(parents=True)
    vdir = root / "videos" / "observation.images.top" / "chunk-000"
    vdir.mkdir(parents=True)
    info = {
        "codebase_version": "v3.0",
        "fps": fps,
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": {
            "action": {"dtype": "float32", "shape": [2], "names": ["x", "y"]},
            "observation.images.top": {"dtype": "video", "shape": [size, size, 3]},
            "timestamp": {"dtype": "float32", "shape": [1]},
        },
    }
    (root / "meta" / "info.json").write_text(json.dumps(info))
    rows, eps, start = [], [], 0
    with av.open(str(vdir / "file-000.mp4"), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2"}
        pts = 0
        for e, (n, base) in enumerate(episodes):
            eps.append(
                {
                    "episode_index": e,
                    "length": n,
                    "data/chunk_index": 0,
                    "data/file_index": 0,
                    "videos/observation.images.top/chunk_index": 0,
                    "videos/observation.images.top/file_index": 0,
                    "videos/observation.images.top/from_timestamp": start / fps,
                    "videos/observation.images.top/to_timestamp": (start + n) / fps,
                }
            )
            for i in range(n):
                rows.append(
                    {
                        "action": [float(base + i), -1.0],
                        "timestamp": i / fps,
                        "episode_index": e,
                        "frame_index": i,
                        "index": start + i,
                    }
                )
                img = np.full((size, size, 3), (base + 10 * i) % 256, np.uint8)
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = pts
                pts += 1
                for packet in stream.encode(frame):
                    out.mux(packet)
            start += n
        for packet in stream.encode():
            out.mux(packet)
    pq.write_table(pa.Table.from_pylist(rows[::-1]), root / "data" / "chunk-000" / "file-000.parquet")
    pq.write_table(pa.Table.from_pylist(eps), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")


def test_lerobot_v3_import(tmp_path):
    from hma_ros.data.importers import import_lerobot

    _write_lerobot(tmp_path / "lr")
    ds = import_lerobot(tmp_path / "lr", tmp_path / "out", "toy_lr", image_size=(16, 16))
    assert ds.num_episodes == 2
    assert ds.episode_lengths == [12, 8]
    assert ds.spec.control_hz == 10.0
    assert ds.spec.action_names == ("x", "y")
    a = np.asarray(ds.actions)
    np.testing.assert_array_equal(a[:12, 0], np.arange(12))  # sorted by frame_index
    np.testing.assert_array_equal(a[12:, 0], 100 + np.arange(8))
    grey = np.asarray(ds.frames)[..., 0].mean(axis=(1, 2))
    expected = np.concatenate([10 * np.arange(12), (100 + 10 * np.arange(8)) % 256])
    assert np.abs(grey - expected).max() < 6  # lossy video, right frame of the right episode
    with pytest.raises(DatasetError, match="not a video feature"):
        import_lerobot(tmp_path / "lr", tmp_path / "out", "toy_lr", camera_key="action")


def test_robomimic_hdf5_import(tmp_path):
    h5py = pytest.importorskip("h5py")
    from hma_ros.data.importers import import_robomimic

    path = tmp_path / "demo.hdf5"
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "env_kwargs": {"control_freq": 20}})
        for d, n in ((10, 4), (2, 6)):  # demo_10 sorts after demo_2
            g = data.create_group(f"demo_{d}")
            g["actions"] = np.full((n, 7), d, np.float32)
            img = np.zeros((n, 32, 32, 3), np.uint8)
            img[:, :16] = 255  # top half white
            g.create_group("obs")["agentview_image"] = img
    ds = import_robomimic(path, tmp_path / "out", "franka_osc", image_size=(8, 8), flip_vertical=True)
    assert ds.episode_lengths == [6, 4]
    assert ds.spec.control_hz == 20.0
    assert np.asarray(ds.actions)[0, 0] == 2
    f = np.asarray(ds.frames)
    assert (f[:, :4] == 0).all()  # flipped: the white half is now at the bottom
    assert (f[:, 4:] == 255).all()
    with pytest.raises(DatasetError, match="no obs/wrist"):
        import_robomimic(path, tmp_path / "out2", "x", camera="wrist")
