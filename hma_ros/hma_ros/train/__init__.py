"""hma_ros.train: pre-training, post-training (new embodiment) and tokenizer training.

Commands (each a config file plus dotted ``key=value`` overrides; torchrun for DDP):

- ``python -m hma_ros.train.pretrain --config hma_ros/config/train/pretrain_small.yaml``
- ``python -m hma_ros.train.posttrain --config hma_ros/config/train/posttrain_franka.yaml
  --init <checkpoint> [--embodiment franka] [--freeze-trunk]``
- ``python -m hma_ros.train.tokenizer ...`` (tokenizers)
- ``python -m hma_ros.train.benchmark`` (training throughput)

Modules: ``config`` (the validated run config), ``batches`` (per-step deterministic
mixture batches), ``data`` (datasets -> held-out split windows), ``trainer`` (the loop),
``checkpoint`` (atomic, resumable training checkpoints), ``evaluation`` (held-out hooks),
``optim`` (AdamW + warmup/cosine), ``distributed`` (torchrun plumbing).
"""
