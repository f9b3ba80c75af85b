"""Tiny real models for the runtime and evaluation tests: seconds on one core."""

import torch

from hma_ros.model.hma import HMA
from hma_ros.model.presets import make_config
from hma_ros.tokenizers import FSQConfig, FSQTokenizer, PixelConfig, PixelTokenizer


def tiny_fsq(levels=(8, 8)) -> FSQTokenizer:
    """32x32 frames -> 4x4 FSQ tokens (vocab 8 x 8 by default), untrained."""
    return FSQTokenizer(FSQConfig(image_size=(32, 32), channels=(8, 8, 8), levels=levels, low_res_blocks=0))


def tiny_model(variant: str, embodiments) -> tuple[HMA, FSQTokenizer | PixelTokenizer]:
    """A seeded ``hma_tiny`` model and a matching tokenizer: FSQ for the discrete variant,
    16x16 pixels in 4x4 patches for the continuous one. Conditioning and heads get small
    non-zero weights (``initialize_weights`` zeroes them) so actions change the outputs."""
    torch.manual_seed(0)
    if variant == "discrete":
        tok = tiny_fsq()
        cfg = make_config("hma_tiny", embodiments, vocab_factors=(8, 8))
    else:
        tok = PixelTokenizer(PixelConfig(image_size=(16, 16), patch=4))
        cfg = make_config("hma_tiny", embodiments, variant="continuous", token_dim=48, diff_sample_steps=4)
    model = HMA(cfg)
    for p in model.parameters():
        if p.abs().sum() == 0:
            p.data.normal_(0, 0.02)
    return model.eval(), tok
