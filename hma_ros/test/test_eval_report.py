"""The report's curves name each baseline as its tables do (``LABELS``, ``LABELS_STAR``)."""

from __future__ import annotations

from hma_ros.eval import report
from hma_ros.eval.evaluate import LABELS, LABELS_STAR


def test_curves_use_the_table_labels(tmp_path, monkeypatch):
    drawn = {}

    def capture(series, ylabel, title, path):
        drawn[path.name] = list(series)
        return path

    monkeypatch.setattr(report, "plot_series", capture)
    per_step = {"model": [1.0], "copy_last_frame": [0.5], "passive_model": [0.7], "from_scratch": [0.9]}
    star = {"model": [1.0], "recorded_actions": [0.8], "copy_last_frame": [0.5]}
    result = {
        "embodiment": "franka",
        "windows": 1,
        "psnr_per_step": per_step,
        "resim": {"psnr_star_per_step": star, "sigma": 0.5},
        "long_horizon": {"horizon": 1, "episodes": 1, "psnr_per_step": per_step, "ssim_per_step": per_step},
    }
    report.plot_per_step(result, "psnr", tmp_path / "psnr_per_step.png")
    report.further_plots(result, tmp_path)
    # The tables' names; a custom baseline keeps its own name, as in the tables.
    table = [LABELS["model"], "copy-last-frame", LABELS["passive_model"], "from_scratch"]
    assert drawn["psnr_per_step.png"] == table
    assert drawn["long_horizon_psnr.png"] == drawn["long_horizon_ssim.png"] == table
    assert drawn["psnr_star_per_step.png"] == [LABELS_STAR[k] for k in star]
