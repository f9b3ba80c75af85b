"""Post-train a new embodiment on a pre-trained trunk (paper §3: new stem and head).

    python -m hma_ros.train.posttrain --config hma_ros/config/train/posttrain_franka.yaml \\
        --init out/pretrain_small/checkpoints/step_00020000 --embodiment franka [--freeze-trunk]

``--embodiment`` is a dataset folder or a name under ``data.roots`` (it replaces
``data.embodiments``). The new model config is the pre-trained one with the new
embodiment added (``--replace-embodiments``: the new one only). Trunk weights come from the
checkpoint, strictly: every trunk key must be there with the same shape, and nothing else
may be. Embodiments the checkpoint already knows keep their stems, heads and modulations
(and their action statistics, which those modules were trained with); new ones start from
the model's initialisation, whose zero-initialised modulation and heads leave the
pre-trained trunk undisturbed at step 0.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hma_ros.data.format import EmbodimentDataset
from hma_ros.model.config import HMAConfig
from hma_ros.train.batches import derive_seed
from hma_ros.train.checkpoint import TRAINER_JSON, read_trainer_json
from hma_ros.train.cli import base_parser, run
from hma_ros.train.config import ConfigError, TrainConfig
from hma_ros.train.data import load_run_tokenizer, open_training_data, resolve_dataset, token_fields
from hma_ros.train.distributed import DistInfo
from hma_ros.train.params import TransferError, embodiment_prefixes, owner
from hma_ros.train.pretrain import check_images
from hma_ros.train.trainer import Trainer

log = logging.getLogger(__name__)

#: HMAConfig fields a post-training run may change: none of them changes a weight's shape.
POSTTRAIN_OVERRIDABLE = ("dropout", "min_mask_ratio", "diff_sample_steps", "diff_clip")


def _summary(keys: list[str], limit: int = 8) -> str:
    return ", ".join(keys[:limit]) + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_pretrained(model: nn.Module, pretrained: nn.Module) -> dict[str, list[str]]:
    """Copy the trunk and the shared embodiments' modules of ``pretrained`` into ``model``.

    Returns a report: ``trunk`` and ``embodiment`` (loaded keys), ``fresh`` (new
    embodiments' keys left at their initialisation), ``dropped`` (pre-trained keys of
    embodiments the new model does not know). Raises :class:`TransferError` listing trunk
    keys missing from the checkpoint, unexpected checkpoint keys, and shape mismatches.
    """
    new_sd, old_sd = model.state_dict(), pretrained.state_dict()
    new_pre, old_pre = embodiment_prefixes(model), embodiment_prefixes(pretrained)
    old_names = set(pretrained.config.embodiment_names)
    report: dict[str, list[str]] = {"trunk": [], "embodiment": [], "fresh": [], "dropped": []}
    missing, mismatched, state = [], [], {}
    for key, value in new_sd.items():
        emb = owner(key, new_pre)
        if emb is not None and emb not in old_names:
            report["fresh"].append(key)
            continue
        if key not in old_sd:
            missing.append(key)
        elif old_sd[key].shape != value.shape:
            mismatched.append(f"{key}: checkpoint {tuple(old_sd[key].shape)} vs model {tuple(value.shape)}")
        else:
            state[key] = old_sd[key]
            report["trunk" if emb is None else "embodiment"].append(key)
    unexpected = []
    for key in old_sd:
        if key in new_sd:
            continue
        emb = owner(key, old_pre)
        if emb is not None and emb not in model.config.embodiment_names:
            report["dropped"].append(key)
        else:
            unexpected.append(key)
    problems = []
    if missing:
        problems.append(f"missing from the checkpoint: {_summary(missing)}")
    if unexpected:
        problems.append(f"unexpected in the checkpoint: {_summary(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch: {_summary(mismatched)}")
    if problems:
        raise TransferError("pre-trained weights do not fit the post-training model; " + "; ".join(problems))
    model.load_state_dict(state, strict=False)
    return report


def set_trainable(model: nn.Module, trained: set[str], freeze_trunk: bool) -> tuple[int, int]:
    """Train the modules of the ``trained`` embodiments, and the trunk unless ``freeze_trunk``.

    Embodiments without data in this run are frozen too: they get zero gradients, and
    AdamW's weight decay would otherwise drift their pre-trained weights.
    Returns (trainable, frozen) parameter counts.
    """
    prefixes = embodiment_prefixes(model)
    trainable = frozen = 0
    for key, p in model.named_parameters():
        emb = owner(key, prefixes)
        p.requires_grad_(emb in trained if emb is not None else not freeze_trunk)
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    return trainable, frozen


def posttrain_config(pre: HMAConfig, new_specs: list, cfg: TrainConfig) -> HMAConfig:
    """The pre-trained config with the new embodiments (added, or replacing the old ones)."""
    bad = sorted(set(cfg.model.overrides) - set(POSTTRAIN_OVERRIDABLE))
    if bad:
        raise ConfigError(
            f"model.overrides.{bad[0]}: cannot change the pre-trained architecture; "
            f"post-training may override {list(POSTTRAIN_OVERRIDABLE)}"
        )
    known = {e.name: e for e in pre.embodiments}
    specs = []
    for s in new_specs:
        old = known.get(s.name)
        if old is not None and (old.action_dim, old.control_hz) != (s.action_dim, s.control_hz):
            raise ConfigError(
                f"data.embodiments: {s.name!r} is in the checkpoint with action_dim {old.action_dim} at "
                f"{old.control_hz} Hz, the dataset has {s.action_dim} at {s.control_hz} Hz; rename the new one"
            )
        specs.append(old if old is not None else s)  # a known embodiment keeps its trained stats
    new_names = {s.name for s in specs}
    keep = () if cfg.posttrain.replace_embodiments else tuple(e for e in pre.embodiments if e.name not in new_names)
    try:
        return dataclasses.replace(pre, embodiments=(*keep, *specs), **cfg.model.overrides)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model.overrides: {e}") from None


def build_posttraining(cfg: TrainConfig, dist: DistInfo) -> Trainer:
    from hma_ros.model.checkpoint import load_model
    from hma_ros.model.hma import HMA

    if cfg.posttrain.init is None:
        raise ConfigError("posttrain.init: the pre-trained checkpoint folder is required (--init)")
    if not cfg.data.embodiments:
        raise ConfigError("data.embodiments: the embodiment to post-train is required (--embodiment)")
    init = Path(cfg.posttrain.init)
    pretrained = load_model(init)
    tokenizer = load_run_tokenizer(cfg.data)
    fields = token_fields(tokenizer)
    have = {k: getattr(pretrained.config, k) for k in fields}
    if have != fields:
        raise ConfigError(f"data.tokenizer: gives {fields}, the pre-trained model was trained on {have}")
    if (init / TRAINER_JSON).is_file():
        pre_tok = read_trainer_json(init).get("tokenizer", {}).get("id")
        if pre_tok not in (None, tokenizer.tokenizer_id):
            log.warning("tokenizer %s differs from pre-training's %s", tokenizer.tokenizer_id, pre_tok)
    folders = [resolve_dataset(e, cfg.data.roots) for e in cfg.data.embodiments]
    specs = [EmbodimentDataset.open(f, check_values=False).spec for f in folders]
    config = posttrain_config(pretrained.config, specs, cfg)
    data = open_training_data(cfg.data, config.max_frames, tokenizer.tokenizer_id)
    check_images(data, tokenizer)

    torch.manual_seed(derive_seed(cfg.seed, "init"))
    model = HMA(config)
    report = load_pretrained(model, pretrained)
    if dist.is_main:
        log.info(
            "loaded %d trunk and %d embodiment tensors from %s; fresh: %s; dropped: %s",
            len(report["trunk"]),
            len(report["embodiment"]),
            init,
            sorted(set(config.embodiment_names) - set(pretrained.config.embodiment_names)) or "none",
            len(report["dropped"]),
        )
    trainable, frozen = set_trainable(model, set(data), cfg.posttrain.freeze_trunk)
    if dist.is_main:
        log.info(
            "training %s%s: %.2fM trainable, %.2fM frozen parameters",
            sorted(data),
            " (trunk frozen)" if cfg.posttrain.freeze_trunk else " and the trunk",
            trainable / 1e6,
            frozen / 1e6,
        )
    info: dict[str, Any] = {
        "kind": "posttrain",
        "init": str(init),
        "tokenizer": {"folder": cfg.data.tokenizer, "id": tokenizer.tokenizer_id},
        "freeze_trunk": cfg.posttrain.freeze_trunk,
    }
    return Trainer(
        cfg,
        model,
        {k: d.train for k, d in data.items()},
        eval_sources={k: d.eval for k, d in data.items() if d.eval is not None},
        dist=dist,
        tokenizer=tokenizer,
        run_info=info,
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = base_parser("python -m hma_ros.train.posttrain", __doc__.split("\n")[0])
    parser.add_argument("--init", help="pre-trained checkpoint folder (sets posttrain.init)")
    parser.add_argument(
        "--embodiment",
        action="append",
        help="dataset folder or name under data.roots to post-train (repeatable; sets data.embodiments)",
    )
    parser.add_argument("--freeze-trunk", action="store_true", help="train only per-embodiment modules")
    parser.add_argument("--replace-embodiments", action="store_true", help="drop the pre-trained embodiments")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.init:
        overrides.append(f'posttrain.init="{args.init}"')
    if args.embodiment:
        overrides.append("data.embodiments=[" + ", ".join(f'"{e}"' for e in args.embodiment) + "]")
    if args.freeze_trunk:
        overrides.append("posttrain.freeze_trunk=true")
    if args.replace_embodiments:
        overrides.append("posttrain.replace_embodiments=true")
    return run(args, overrides, build_posttraining)


if __name__ == "__main__":
    main(sys.argv[1:])
