"""Both variants can fit a handful of sequences: the masked loss falls by a stated factor."""

import pytest
import torch

from hma_ros.model import HMA, EmbodimentSpec, make_config

EMBS = (EmbodimentSpec("arm", 3, 6.0), EmbodimentSpec("pusher", 2, 4.0))


def _eval_loss(model, batch, seed=123):
    # Fixed masks and diffusion noise, so the loss is comparable across steps.
    torch.manual_seed(seed)
    with torch.no_grad():
        return float(model(batch)[0])


@pytest.mark.parametrize(
    ("variant", "setting", "factor"),
    [("discrete", "forward_dynamics", 4.0), ("continuous", "forward_dynamics", 2.0), ("discrete", "full", 3.0)],
)
def test_overfits_a_few_sequences(variant, setting, factor):
    torch.manual_seed(0)
    model = HMA(make_config("hma_tiny", EMBS, variant=variant, dim=64, diff_dim=64))
    g = torch.Generator().manual_seed(0)
    B, T = 4, 6
    key = "tokens" if variant == "discrete" else "latents"
    x = (
        torch.randint(0, 64, (B, T, 4, 4), generator=g)
        if variant == "discrete"
        else torch.randn(B, T, 4, 4, 4, generator=g)
    )
    batch = {
        key: x,
        "actions": torch.randn(B, T, 9, generator=g),
        "embodiment": torch.tensor([0, 1, 0, 1]),
        "setting": setting,
    }
    before = _eval_loss(model, batch)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(150):
        loss, _ = model(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _eval_loss(model, batch)
    assert after < before / factor, f"{variant}: loss {before:.3f} -> {after:.3f}, wanted a {factor}x drop"
