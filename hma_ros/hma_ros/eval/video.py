"""Side-by-side comparison images and videos of frames (no ROS): labelled grids, H.264 MP4s
and PNG strips written with PyAV, and the reader the tests and evaluations check them with.

Frames are ``uint8`` RGB ``(H, W, 3)`` as everywhere in hma_ros (docs/architecture.md).
A typical comparison is a grid whose rows are "actual" / "predicted" / "|diff|" and whose
columns are future steps; :func:`grid` lays it out, :func:`write_video` writes one grid per
tick as an MP4, :func:`write_png` one still.

    cells = [[actual_k for k in ...], [predicted_k for k in ...]]
    frame = grid(cells, row_labels=["actual", "predicted"], col_labels=["+0.5 s", "+1.0 s"])
    write_video("out/demo.mp4", [frame, ...], fps=2)
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

BACKGROUND = 24  # grey level around and between cells
MISSING = 64  # grey level of a cell without an image (e.g. a future frame that never arrived)
TEXT = (235, 235, 235)
LINE_H = 14  # pixels per line of label text (Pillow's default bitmap font is 11 px high)


def check_frame(img: np.ndarray, what: str = "frame") -> np.ndarray:
    """``img`` as a contiguous uint8 ``(H, W, 3)`` array; ValueError naming the bad shape/dtype."""
    a = np.asarray(img)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[-1] != 3 or min(a.shape[:2]) < 1:
        raise ValueError(f"{what} must be uint8 RGB (H, W, 3), got {a.dtype} {a.shape}")
    return np.ascontiguousarray(a)


def abs_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel ``|a - b|`` of two same-shaped uint8 images, as uint8."""
    a, b = check_frame(a, "a"), check_frame(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"abs_diff needs same-shaped images, got {a.shape} and {b.shape}")
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).astype(np.uint8)


def upscale(img: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor (model frames are small; keep pixels honest)."""
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    return np.repeat(np.repeat(img, factor, axis=0), factor, axis=1) if factor > 1 else img


def draw_text(img: np.ndarray, xy: tuple[int, int], text: str, fill: tuple[int, int, int] = TEXT) -> np.ndarray:
    """``img`` with ``text`` drawn at ``xy`` (left, top) in Pillow's default font; a new array."""
    from PIL import Image, ImageDraw  # Pillow: only for text (a dependency of diffusers/scikit-image)

    canvas = Image.fromarray(check_frame(img, "img"))
    ImageDraw.Draw(canvas).text(xy, text, fill=fill)
    return np.asarray(canvas)


def grid(
    cells: Sequence[Sequence[np.ndarray | None]],
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str | None = None,
    cell_size: tuple[int, int] | None = None,
    min_cell: int = 96,
    pad: int = 4,
) -> np.ndarray:
    """Lay out ``cells[row][col]`` (uint8 ``(h, w, 3)``, or None for "no image") as one labelled image.

    Every cell is shown at ``cell_size`` (h, w); by default the largest cell enlarged by the
    smallest integer factor that makes it at least ``min_cell`` pixels high. Cells are
    enlarged with nearest neighbour by an integer factor, so they must divide ``cell_size``.
    Row labels go left of each row, column labels above each column, ``title`` on top.
    """
    rows = [list(r) for r in cells]
    if not rows or not all(rows) or len({len(r) for r in rows}) != 1:
        raise ValueError(f"cells must be a non-empty rectangle, got row lengths {[len(r) for r in rows]}")
    n_rows, n_cols = len(rows), len(rows[0])
    if row_labels is not None and len(row_labels) != n_rows:
        raise ValueError(f"{len(row_labels)} row labels for {n_rows} rows")
    if col_labels is not None and len(col_labels) != n_cols:
        raise ValueError(f"{len(col_labels)} column labels for {n_cols} columns")
    images = [check_frame(c, f"cells[{i}][{j}]") for i, r in enumerate(rows) for j, c in enumerate(r) if c is not None]
    if cell_size is None:
        if not images:
            raise ValueError("no images in cells: give cell_size")
        h, w = max(i.shape[0] for i in images), max(i.shape[1] for i in images)
        f = max(1, math.ceil(min_cell / h))
        cell_size = (h * f, w * f)
    ch, cw = cell_size
    left = (max(len(s) for s in row_labels) * 6 + 2 * pad) if row_labels else 0  # ~6 px per character
    top = (LINE_H if title else 0) + (LINE_H if col_labels else 0)
    height = top + n_rows * (ch + pad) + pad
    width = left + n_cols * (cw + pad) + pad
    if col_labels:  # labels wider than a cell widen the columns' spacing, not the cells
        width = max(width, left + n_cols * (max(len(s) for s in col_labels) * 6 + pad) + pad)
    col_w = (width - left - pad) // n_cols
    out = np.full((height, width, 3), BACKGROUND, np.uint8)
    for i, r in enumerate(rows):
        y = top + pad + i * (ch + pad)
        for j, c in enumerate(r):
            x = left + pad + j * col_w
            if c is None:
                out[y : y + ch, x : x + cw] = MISSING
                continue
            c = check_frame(c)
            fy, fx = ch // c.shape[0], cw // c.shape[1]
            if fy != fx or fy * c.shape[0] != ch or fx * c.shape[1] != cw:
                raise ValueError(f"cell {c.shape[:2]} does not scale by one integer factor to {cell_size}")
            out[y : y + ch, x : x + cw] = upscale(c, fy)
    if title:
        out = draw_text(out, (pad, 1), title)
    if col_labels:
        for j, s in enumerate(col_labels):
            out = draw_text(out, (left + pad + j * col_w, (LINE_H if title else 0) + 1), s)
    if row_labels:
        for i, s in enumerate(row_labels):
            out = draw_text(out, (pad, top + pad + i * (ch + pad) + ch // 2 - LINE_H // 2), s)
    return out


def stack(images: Sequence[np.ndarray], pad: int = 4) -> np.ndarray:
    """Images one above the other (left-aligned, narrower ones padded with the background)."""
    images = [check_frame(im, f"images[{i}]") for i, im in enumerate(images)]
    if not images:
        raise ValueError("nothing to stack")
    width = max(im.shape[1] for im in images)
    parts = []
    for im in images:
        part = np.full((im.shape[0] + pad, width, 3), BACKGROUND, np.uint8)
        part[: im.shape[0], : im.shape[1]] = im
        parts.append(part)
    return np.concatenate(parts)[:-pad] if pad else np.concatenate(parts)


def _even(img: np.ndarray) -> np.ndarray:
    """Pad to even height and width (yuv420p halves the chroma planes)."""
    h, w = img.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return img
    return np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _partial(path: Path) -> Path:
    """A sibling temporary name with the same suffix (PyAV picks the container from it)."""
    return path.with_name(f".{path.stem}.partial{os.getpid()}{path.suffix}")


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float = 2.0,
    codec: str = "libx264",
    crf: int = 18,
) -> int:
    """Encode ``frames`` (uint8 ``(H, W, 3)``, all the same size) into ``path``; returns the count.

    H.264 (yuv420p, ``crf`` 0..51, lower = better; 18 is visually lossless) in the container
    named by the suffix (``.mp4``). Odd sizes are padded by one edge pixel. The file appears
    atomically: a partial file is renamed into place once the encoder is flushed.
    """
    path = Path(path)
    if codec not in av.codecs_available:
        raise ValueError(
            f"PyAV has no {codec!r} encoder here (available H.264: "
            f"{sorted(c for c in av.codecs_available if '264' in c)})"
        )
    if not 0 < fps <= 1000:
        raise ValueError(f"fps must be in (0, 1000], got {fps}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial(path)
    count, size = 0, None
    try:
        with av.open(str(tmp), mode="w") as container:
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(int(crf))}
            for img in frames:
                img = _even(check_frame(img, f"frame {count}"))
                if size is None:
                    size = img.shape[:2]
                    stream.height, stream.width = size
                elif img.shape[:2] != size:
                    raise ValueError(f"frame {count} is {img.shape[:2]}, the video is {size}")
                container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
                count += 1
            if count == 0:
                raise ValueError("no frames to write")
            container.mux(stream.encode(None))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return count


def read_video(path: str | os.PathLike) -> np.ndarray:
    """Every frame of a video (or a still image) as uint8 ``(T, H, W, 3)``."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise ValueError(f"{path} holds no video frames")
    return np.stack(frames)


def write_png(path: str | os.PathLike, img: np.ndarray) -> Path:
    """Write one uint8 RGB image as a (lossless) PNG, atomically; returns the path."""
    img = check_frame(img, "img")
    codec = av.CodecContext.create("png", "w")
    codec.height, codec.width = img.shape[:2]
    codec.pix_fmt = "rgb24"
    packets = [*codec.encode(av.VideoFrame.from_ndarray(img, format="rgb24")), *codec.encode(None)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial(path)
    tmp.write_bytes(b"".join(bytes(p) for p in packets))
    tmp.replace(path)
    return path
