"""Fuzz the world model node with malformed input, class by class, and check it survives each.

The node runs in its own process, fed a valid stream (the bundled recording at 10 Hz camera,
20 Hz commands) throughout. Each class sends its malformed variants: rollout requests with
bad fields (sizes, NaN/inf, absurd magnitudes, bad images, huge N/H/steps) and topic messages
(bad encodings, sizes and data, NaN/inf and absurd joint values, missing joints, stamps from
the past, the future, zero). A rollout must be answered (success or a refusal that says why)
within ``--timeout``. After each class the node must still be alive, still answer a valid
rollout and still publish live predictions. Prints a table (per class: variants sent, refused,
accepted, crashes, hangs), writes JSON, exits 1 on any crash or hang.

    python -m hma_ros.nodes.fuzz --out out/fuzz.json
    python -m hma_ros.nodes.fuzz --repeat 1 --out /tmp/fuzz.json       # what CI runs
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from sensor_msgs.msg import Image, JointState

from hma_ros.nodes import spin
from hma_ros.nodes.bag_replay import DEFAULT_BAG
from hma_ros.nodes.client import WorldModelClient
from hma_ros.nodes.convert import numpy_to_image, sec_to_stamp
from hma_ros.nodes.demo import resolve_checkpoint, setup_logging
from hma_ros.nodes.feed import Recording, Session, ToolError, rollout_request, ros_tool
from hma_ros.nodes.processes import NodeProcess
from hma_ros.runtime.robot_config import RobotConfig, load_robot_config
from hma_ros_interfaces.srv import Rollout

log = logging.getLogger("hma_ros.demo")  # the demo's stdout/stderr handlers

U32 = 2**32 - 1


def _image(size=(32, 32), value=90, **fields: Any) -> Image:
    msg = numpy_to_image(np.full((*size, 3), value, np.uint8), "rgb8", sec_to_stamp(time.time()))
    for k, v in fields.items():
        setattr(msg, k, v)
    return msg


def bad_images() -> Iterator[tuple[str, Image]]:
    """Malformed ``sensor_msgs/Image`` variants, named."""
    for enc in ("16UC1", "yuv422", "", "rgb16", "\x00\xff"):
        yield f"encoding {enc!r}", _image(encoding=enc)
    yield "zero width", _image(width=0)
    yield "zero height", _image(height=0)
    yield "truncated data", _image(data=b"\x00" * 100)
    yield "empty data", _image(data=b"")
    yield "step < width*3", _image(step=5)
    yield "step huge", _image(step=U32)
    yield "100000x100000 declared", _image(width=100_000, height=100_000, step=300_000)


def valid_images() -> Iterator[tuple[str, Image]]:
    """Unusual but valid images: the node must accept and fit them."""
    yield "1x1 pixel", _image(size=(1, 1))
    yield "mono8", numpy_to_image(np.zeros((8, 12), np.uint8), "mono8", sec_to_stamp(time.time()))
    yield "1000x700 bgra8", numpy_to_image(np.zeros((700, 1000, 3), np.uint8), "bgra8", sec_to_stamp(time.time()))
    yield "100000x1", _image(width=100_000, height=1, step=300_000, data=b"\x00" * 300_000)


class Fuzzer:
    def __init__(self, client: WorldModelClient, robot: RobotConfig, base: np.ndarray, args: argparse.Namespace):
        self.client, self.robot, self.base, self.args = client, robot, base, args
        node = client.node
        self.camera = node.create_publisher(Image, robot.camera.topic, 10)
        self.commands = node.create_publisher(JointState, robot.action.topic, 50)
        self.rng = np.random.default_rng(0)

    # -- rollout requests -------------------------------------------------------------------------
    def request(self, n: int = 2, h: int = 2, **fields: Any) -> Rollout.Request:
        req = rollout_request(self.robot, self.base, n, h, self.rng, return_frames=False)
        for k, v in fields.items():
            setattr(req, k, v)
        return req

    def rollout_classes(self) -> dict[str, Callable[[], Iterator[tuple[str, Rollout.Request]]]]:
        r, A, S = self.request, self.robot.action_dim, self.robot.stride
        size = 2 * 2 * S * A

        def counts():
            for name, n, h in (("N=0", 0, 2), ("N=2^32-1", U32, 2), ("H=0", 2, 0), ("H=2^32-1", 2, U32)):
                yield name, r(num_candidates=n, horizon=h)
            yield "N=max+1", r(17, 2)
            yield "H=max+1", r(2, 17)

        def dims():
            for a in (0, 1, A + 1, 1000):
                yield f"action_dim={a}", r(action_dim=a)
            for s in (1, S + 1, U32):
                yield f"actions_per_step={s}", r(actions_per_step=s)

        def values():
            for name, n in (("empty", 0), ("one short", size - 1), ("one long", size + 1), ("1e6 values", 10**6)):
                yield f"{name} candidate_actions", r(candidate_actions=[0.0] * n)
            for v in (float("nan"), float("inf"), -float("inf"), 1e30, -3.4e38, 1e10, 1e4):
                yield f"candidate_actions {v:g}", r(candidate_actions=[v] * size)
            one = [*self.request().candidate_actions]
            one[size // 2] = float("nan")
            yield "one NaN among valid", r(candidate_actions=one)

        def contexts():
            ctx = [float(x) for x in np.tile(self.base, S)]
            for name, img in bad_images():
                yield f"context frame {name}", r(context_frames=[img], context_actions=ctx)
            yield "context_actions without frames", r(context_actions=ctx)
            yield "context_actions too short", r(context_frames=[_image()], context_actions=ctx[:-1])
            yield "context_actions NaN", r(context_frames=[_image()], context_actions=[float("nan")] * len(ctx))
            yield "context_actions 1e30", r(context_frames=[_image()], context_actions=[1e30] * len(ctx))
            yield "100 valid context frames", r(context_frames=[_image()] * 100, context_actions=ctx * 100)

        def goals():
            for name, img in bad_images():
                yield f"goal {name}", r(goal=img)
            yield "goal 1000x700", r(goal=numpy_to_image(np.zeros((700, 1000, 3), np.uint8), "rgb8"))

        def steps_and_seeds():
            for m in (65, 1000, U32):
                yield f"num_steps={m}", r(num_steps=m)
            for seed in (2**63 - 1, -(2**63), 0):
                yield f"seed={seed}", r(seed=seed)
            yield "16 x 16 with frames", r(16, 16, return_frames=True)

        return {
            "rollout: candidates/horizon": counts,
            "rollout: action_dim/actions_per_step": dims,
            "rollout: candidate_actions": values,
            "rollout: context": contexts,
            "rollout: goal": goals,
            "rollout: num_steps/seed/size": steps_and_seeds,
        }

    def run_rollouts(self, variants: Iterator[tuple[str, Rollout.Request]]) -> dict[str, Any]:
        out = {"sent": 0, "refused": 0, "accepted": 0, "hangs": 0, "examples": {}}
        for name, req in variants:
            resp, _ = self.client.call(req, timeout=self.args.timeout)
            out["sent"] += 1
            if resp is None:
                out["hangs"] += 1
                out["examples"][name] = "NO ANSWER"
            elif resp.success:
                out["accepted"] += 1
                out["examples"][name] = "accepted"
            else:
                out["refused"] += 1
                out["examples"][name] = resp.message[:160]
        return out

    # -- topics ---------------------------------------------------------------------------------------
    def command(self, positions: list[float] | None = None, names: list[str] | None = None, stamp: float = -1):
        msg = JointState(name=list(self.robot.action.names) if names is None else names)
        msg.position = [float(x) for x in (self.base if positions is None else positions)]
        msg.header.stamp = sec_to_stamp(time.time() if stamp < 0 else stamp)
        return msg

    def topic_classes(self) -> dict[str, Callable[[], Iterator[tuple[str, Any, Any]]]]:
        names, A = list(self.robot.action.names), self.robot.action_dim

        def images():
            for name, img in bad_images():
                yield name, self.camera, img
            for name, img in valid_images():
                yield f"valid: {name}", self.camera, img

        def joints():
            c = self.command
            yield "missing joint", self.commands, c(names=names[:-1], positions=list(self.base[:-1]))
            yield "unknown names", self.commands, c(names=[f"x{i}" for i in range(A)])
            yield "names/positions mismatch", self.commands, c(positions=list(self.base[:-1]))
            yield "no names, wrong count", self.commands, c(names=[], positions=[0.0] * (A + 2))
            yield "empty", self.commands, JointState()
            for v in (float("nan"), float("inf"), 1e30, -1e30, 1e6):
                yield f"all {v:g}", self.commands, c(positions=[v] * A)
            yield "extra joints (valid)", self.commands, c(names=[*names, "extra"], positions=[*self.base, 0.0])

        def stamps():
            now = time.time()
            for name, t in (
                ("zero stamp", 0.0),
                ("1 s old", now - 1.0),
                ("an hour old", now - 3600),
                ("1e6 s ahead", now + 1e6),
            ):
                yield f"image {name}", self.camera, _image(header=_header(t))
                yield f"command {name}", self.commands, self.command(stamp=t)
            for k in range(20):  # a burst of 20 stamps jumping back and forth
                t = now - 5.0 if k % 2 else now + 5.0
                yield "jumping stamps", self.camera, _image(header=_header(t))

        return {"topic: images": images, "topic: joint commands": joints, "topic: stamps and time jumps": stamps}

    def run_topics(self, variants: Iterator[tuple[str, Any, Any]]) -> dict[str, Any]:
        before, _, _ = self.client.diagnostics()
        out = {"sent": 0, "hangs": 0, "examples": {}}
        for name, pub, msg in variants:
            pub.publish(msg)
            out["sent"] += 1
            out["examples"].setdefault(name, 0)
            out["examples"][name] += 1
            time.sleep(0.01)
        after = self.client.fresh_diagnostics()
        for key in ("frames_refused", "actions_refused", "actions_out_of_range", "time_resets"):
            out[key] = int(after.get(key, 0)) - int(before.get(key, 0))
        return out

    # -- health check after each class --------------------------------------------------------------------
    def healthy(self, world: NodeProcess) -> dict[str, Any]:
        """Alive, answers a valid rollout, publishes live predictions (from the valid stream)."""
        t0 = time.time()
        deadline = time.monotonic() + self.args.timeout
        answered, message = False, ""
        while time.monotonic() < deadline and world.alive():  # a context restarted by the class refills
            resp, _ = self.client.call(self.request(), timeout=self.args.timeout)
            if resp is not None and resp.success:
                answered = True
                break
            message = "no answer" if resp is None else resp.message
            time.sleep(0.2)
        publishing = spin.wait_until(
            lambda: len(self.client.predictions_since(t0)) >= 1 or not world.alive(), self.args.timeout
        ) and bool(self.client.predictions_since(t0))
        return {"alive": world.alive(), "answers": answered, "publishes": publishing, "last_refusal": message}


def _header(t: float) -> Any:
    from std_msgs.msg import Header

    return Header(stamp=sec_to_stamp(t), frame_id="camera")


def fuzz(args: argparse.Namespace, checkpoint: Path, signals: Any) -> dict[str, Any]:
    robot = load_robot_config(args.robot)
    recording = Recording.load(args.bag, robot)
    params = {"robot": args.robot, "checkpoint": checkpoint, "autostart": True, "horizon": 2}
    classes: dict[str, Any] = {}
    with Session("hma_fuzz", recording, params, args.out.with_suffix(".world_model.log"), signals) as session:
        client, world = session.client, session.world
        fuzzer = Fuzzer(client, robot, recording.mean_command(), args)
        if not spin.wait_until(lambda: bool(client.predictions), timeout=30.0):
            raise ToolError(f"no live prediction before fuzzing:\n{world.log_tail()}")
        groups = [(fuzzer.run_rollouts, fuzzer.rollout_classes()), (fuzzer.run_topics, fuzzer.topic_classes())]
        for runner, table in groups:
            for name, variants in table.items():
                if signals or not world.alive():
                    break
                t0 = time.monotonic()
                rows = [runner(variants()) for _ in range(args.repeat)]
                row = rows[0] | {k: sum(r[k] for r in rows) for k in rows[0] if isinstance(rows[0][k], int)}
                row["seconds"] = round(time.monotonic() - t0, 2)
                row["after"] = fuzzer.healthy(world)
                row["crashed"] = not row["after"]["alive"]
                row["hangs"] += not (row["after"]["answers"] and row["after"]["publishes"]) and not row["crashed"]
                classes[name] = row
                log.info(
                    f"fuzz: {name}: {row['sent']} sent, {row['hangs']} hangs, "
                    + ("CRASHED" if row["crashed"] else "node fine")
                )
        session.feeder.stop()
        diag = client.fresh_diagnostics()
        code, exit_s = session.stop_node()
    return {
        "classes": classes,
        "crashes": sum(r["crashed"] for r in classes.values()),
        "hangs": sum(r["hangs"] for r in classes.values()),
        "node_exit": {"code": code, "seconds": round(exit_s, 3), "log": str(world.log_path)},
        "diagnostics": diag,
    }


def print_table(result: dict[str, Any]) -> None:
    log.info(
        f"{'class':<40} {'sent':>6} {'refused':>8} {'accepted':>9} {'crash':>6} {'hang':>5}  after: answers/publishes"
    )
    for name, r in result["classes"].items():
        refused = r.get("refused", r.get("frames_refused", 0) + r.get("actions_refused", 0))
        accepted = r.get("accepted", "-")
        after = r["after"]
        log.info(
            f"{name:<40} {r['sent']:>6} {refused!s:>8} {accepted!s:>9} {int(r['crashed']):>6} {r['hangs']:>5}  "
            f"{after['answers']}/{after['publishes']}"
        )
    log.info(
        f"fuzz: {result['crashes']} crashes, {result['hangs']} hangs; world_model exited "
        f"{result['node_exit']['code']} in {result['node_exit']['seconds']} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robot", default="franka")
    parser.add_argument("--checkpoint", default="", help="model folder; empty: the robot config's model")
    parser.add_argument("--bag", default=DEFAULT_BAG, help="recording whose valid stream runs throughout")
    parser.add_argument("--repeat", type=int, default=3, help="times each class is sent")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds an answer or a prediction may take")
    parser.add_argument("--out", type=Path, default=Path("out/fuzz.json"))
    args = parser.parse_args(argv)
    setup_logging()

    def body(signals: Any) -> int:
        result = fuzz(args, resolve_checkpoint(args.robot, args.checkpoint), signals)
        print_table(result)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        log.info(f"fuzz: wrote {args.out}")
        return 0 if not result["crashes"] and not result["hangs"] and result["node_exit"]["code"] == 0 else 1

    return ros_tool("fuzz", body)


if __name__ == "__main__":
    raise SystemExit(main())
