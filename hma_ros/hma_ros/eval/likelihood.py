"""Teacher-forced next-frame likelihood of the discrete variant: what perplexity scores.

The protocol: frame ``t`` is predicted from the true frames before it and the actions that
produced them, with every one of its tokens masked, i.e. the logits of the first MaskGIT
step of generation. Its per-code negative log-likelihood is the sum over the vocabulary's
factors (the paper's 2^18 codes as 2 x 512 digits: a uniform model scores log(2^18)), averaged
over the frame's tokens; ``exp`` of the mean over frames is the per-code perplexity.
"""

from __future__ import annotations

import torch

from hma_ros.eval.metrics import token_nll
from hma_ros.model.hma import HMA, factor_digits


@torch.no_grad()
def next_frame_nll(
    model: HMA, tokens: torch.Tensor, actions: torch.Tensor, embodiment: str | int, first: int
) -> torch.Tensor:
    """Mean per-code NLL (nats) of frames ``first .. T-1`` of one window, each predicted from
    the true frames before it. ``tokens`` (T, h, w) ids; ``actions`` (T, A): ``actions[t]``
    is executed after frame t (the window layout), NaN = unknown. Returns (T - first,) float64.

    The T - first predictions run as one batch of causal passes: row j masks frame
    ``first + j``, and causality keeps the (unmasked) frames after it from mattering.
    """
    c = model.config
    if c.variant != "discrete":
        raise ValueError("perplexity needs the discrete (token) variant")
    T = tokens.shape[0]
    if not 1 <= first < T <= c.max_frames:
        raise ValueError(f"need 1 <= first={first} < T={T} <= max_frames={c.max_frames}")
    n = T - first
    prev = torch.cat([torch.full_like(actions[:1], float("nan")), actions[:-1]])  # produced frame t
    mask = torch.zeros(n, T, c.tokens_h * c.tokens_w, dtype=torch.bool)
    mask[torch.arange(n), torch.arange(first, T)] = True
    out = model.outputs(tokens.expand(n, -1, -1, -1), prev.expand(n, -1, -1), embodiment, token_mask=mask)
    targets = factor_digits(tokens[first:].flatten(1), c.vocab_factors)  # per factor (n, S)
    nll = 0
    for logits, digits in zip(out["logits"], targets, strict=True):  # (n, T, S, V_f), (n, S)
        nll = nll + token_nll(logits[torch.arange(n), torch.arange(first, T)], digits)
    return nll.mean(-1)
