"""An evaluation report people can look at: Markdown, per-step curves, image strips and videos.

:func:`write_report` turns what :func:`hma_ros.eval.evaluate.evaluate` returns (the numbers, and
the example windows it was asked to keep) into a folder::

    DIR/report.md            the metrics table against the baselines, curves, examples, the command
    DIR/report.json          every number
    DIR/psnr_per_step.png    PSNR per step ahead, model vs copy-the-last-frame (matplotlib)
    DIR/ssim_per_step.png, DIR/lpips_per_step.png
    DIR/psnr_star_per_step.png  PSNR* against the re-simulated truth (simulated datasets)
    DIR/long_horizon_psnr.png, DIR/long_horizon_ssim.png   100+ frame rollouts (``--long-data``)
    DIR/examples/window_NNNN.png   rows actual / predicted / |diff| / random actions, columns steps
    DIR/examples/window_NNNN.mp4   the same, one step per video frame (PyAV, H.264)

The Markdown links only files in the folder, so it renders anywhere (GitHub, an IDE, pandoc).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from hma_ros.eval.video import abs_diff, grid, write_png, write_video

STEP_S = 0.5  # the model clock: 2 Hz


YLABELS = {"psnr": "PSNR (dB), higher is better", "lpips": "LPIPS, lower is better", "ssim": "SSIM, higher is better"}


def plot_series(series: dict[str, list[float]], ylabel: str, title: str, path: Path) -> Path:
    """Line plot of per-step values (one line per entry of ``series``) against seconds ahead."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.2), dpi=120)
    for name, values in series.items():
        steps = np.arange(1, len(values) + 1) * STEP_S
        ax.plot(steps, values, marker="o" if len(values) <= 20 else None, label=name)
    ax.set_xlabel("seconds ahead")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def labelled(series: dict[str, list[float]], star: bool = False) -> dict[str, list[float]]:
    """Series keyed by the names the report's tables use (``LABELS``, ``LABELS_STAR``), so a
    curve and its table name each baseline alike; other keys (a custom baseline) stay."""
    from hma_ros.eval.evaluate import LABELS, LABELS_STAR

    names = LABELS_STAR if star else LABELS
    return {names.get(k, k): v for k, v in series.items()}


def plot_per_step(result: dict[str, Any], metric: str, path: Path) -> Path:
    """Line plot of ``result[f"{metric}_per_step"]``: the model and each baseline per step ahead."""
    title = f"{result['embodiment']}: {metric.upper()} per step, {result['windows']} windows"
    return plot_series(labelled(result[f"{metric}_per_step"]), YLABELS.get(metric, metric.upper()), title, path)


def further_plots(result: dict[str, Any], out: Path) -> list[str]:
    """PSNR* per step (re-simulated) and the long-horizon curves, when the result has them."""
    names = []
    rs = result.get("resim", {})
    if "psnr_star_per_step" in rs:
        series = labelled(rs["psnr_star_per_step"], star=True)
        title = f"PSNR* vs the simulator, actions perturbed by {rs['sigma']:g} std"
        names.append(plot_series(series, YLABELS["psnr"], title, out / "psnr_star_per_step.png").name)
    lh = result.get("long_horizon")
    if lh:
        for metric in ("psnr", "ssim"):
            title = f"{metric.upper()} over {lh['horizon']} open-loop frames, {lh['episodes']} episodes"
            path = out / f"long_horizon_{metric}.png"
            names.append(plot_series(labelled(lh[f"{metric}_per_step"]), YLABELS[metric], title, path).name)
    return names


def example_grid(example: dict[str, Any], step: int | None = None) -> np.ndarray:
    """Rows actual / predicted / |diff| / random actions; columns every step (or only ``step``)."""
    truth, pred, rand = example["truth"], example["pred"], example["random"]
    cols = range(len(truth)) if step is None else [step]
    rows = [
        [truth[k] for k in cols],
        [pred[k] for k in cols],
        [abs_diff(pred[k], truth[k]) for k in cols],
        [rand[k] for k in cols],
    ]
    labels = ["actual", "predicted", "|diff|", "random actions"]
    title = f"window {example['window']}, episode {example['episode']}"
    return grid(rows, row_labels=labels, col_labels=[f"+{(k + 1) * STEP_S:g} s" for k in cols], title=title)


def write_report(result: dict[str, Any], examples: list[dict[str, Any]], out_dir: str | Path) -> Path:
    """Write the report folder (see the module docstring); returns the path of ``report.md``."""
    from hma_ros.eval.evaluate import format_table

    out = Path(out_dir)
    (out / "examples").mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    metrics = [m for m in ("psnr", "ssim", "lpips") if f"{m}_per_step" in result]
    plots = [plot_per_step(result, m, out / f"{m}_per_step.png").name for m in metrics]
    plots += further_plots(result, out)
    shown = []
    for ex in examples:
        stem = f"examples/window_{ex['window']:04d}"
        write_png(out / f"{stem}.png", example_grid(ex))
        write_video(out / f"{stem}.mp4", [example_grid(ex, k) for k in range(len(ex["truth"]))], fps=2.0)
        shown.append((ex, stem))

    r = result
    lines = [
        f"# Evaluation of `{Path(r['checkpoint']).name}` on `{r['dataset']}`",
        "",
        f"{r['windows']} windows of {r['context']} context + {r['horizon']} predicted frames at 2 Hz "
        f"from episodes {r['episodes']}; M={r['num_steps']} unmasking steps, temperature "
        f"{r['temperature']}, seed {r['seed']}. The model rolls out under the recorded actions; "
        "copy-last-frame repeats the last context frame; the passive model is the same checkpoint "
        "with every action unknown (what the actions add)."
        + "".join(f" Baseline `{k}`: `{v}`, on the same windows." for k, v in r.get("baselines", {}).items()),
        "",
        "## Metrics",
        "",
        format_table(r).split("\n", 1)[1].strip(),
        "",
        *(f"![{p}]({p})" for p in plots),
        "",
        "## Examples",
        "",
        "Rows: the recorded frames, the model's prediction, their absolute difference, and the "
        "prediction under random actions (what dPSNR compares against).",
        "",
    ]
    for ex, stem in shown:
        lines += [f"![window {ex['window']}]({stem}.png)", f"[video, one step per frame]({stem}.mp4)", ""]
    if r.get("command"):
        lines += ["## Reproduce", "", "```sh", r["command"], "```", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
