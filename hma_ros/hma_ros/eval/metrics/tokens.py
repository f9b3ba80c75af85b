"""Perplexity of the discrete (VQ-token) variant."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token negative log-likelihood (nats, float64) of ``targets`` (...) under ``logits``
    (..., V); ``perplexity`` is ``exp`` of its mean. Same checks as ``perplexity``."""
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} must be targets {tuple(targets.shape)} + (V,)")
    if targets.is_floating_point():
        raise ValueError("targets must be integer token ids")
    vocab = logits.shape[-1]
    if targets.numel() and (targets.min() < 0 or targets.max() >= vocab):
        raise ValueError(f"targets must lie in [0, {vocab}), got [{int(targets.min())}, {int(targets.max())}]")
    logp = F.log_softmax(logits.double(), dim=-1)
    return -logp.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)


def perplexity(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """``exp(mean negative log-likelihood)`` of ``targets`` under ``logits``.

    ``logits``: (..., V) unnormalised scores or log-probabilities (``log_softmax`` is applied
    either way; it leaves log-probabilities unchanged). ``targets``: (...) integer token ids
    in [0, V). ``mask``: optional (...) bool, True where a token counts (e.g. only the masked
    tokens the model predicted); the mean runs over counted tokens only.

    A factorised vocabulary (the paper's 2^18 codes as 2 factors of 512) is passed as logits
    (..., F, V) with targets (..., F): the result is the per-factor perplexity; the per-code
    perplexity is that value to the power F. A uniform predictor scores exactly V.
    """
    nll = token_nll(logits, targets)  # (...)
    if mask is not None:
        if mask.shape != targets.shape:
            raise ValueError(f"mask {tuple(mask.shape)} must match targets {tuple(targets.shape)}")
        nll = nll[mask.bool()]
    if nll.numel() == 0:
        raise ValueError("no tokens to score")
    return float(torch.exp(nll.mean()))
