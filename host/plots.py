"""PNG plots of a run: prediction vs reference vs error, and the loss curve."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on build machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: Path) -> None:
    """PNG at `path`, written under a temporary name and renamed (never a half-written plot)."""
    from .runfolder import write_atomic

    try:
        write_atomic(Path(path), lambda f: fig.savefig(f, format="png", dpi=110))
    finally:
        plt.close(fig)


def prediction(path: Path, problem, x, pred, ref, title: str = "") -> None:
    shape = problem.grid_shape()
    if len(shape) == 1:
        order = np.argsort(x[:, 0])
        fig, (a, b) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True, height_ratios=[3, 1.4])
        a.plot(x[order, 0], ref[order], "k-", lw=2, label="reference")
        a.plot(x[order, 0], pred[order], "C1-", lw=1.3, label="prediction")
        a.set_ylabel("u")
        a.legend()
        b.plot(x[order, 0], (pred - ref)[order], "C3-", lw=1)
        b.axhline(0, color="k", lw=0.5)
        b.set_ylabel("error")
        b.set_xlabel(problem.coord_names[0])
    else:
        fig, axes = plt.subplots(1, 3, figsize=(13, 4))
        extent = [problem.lower[1], problem.upper[1], problem.lower[0], problem.upper[0]]
        vmin, vmax = ref.min(), ref.max()
        for ax, data, name in zip(axes, [pred, ref, pred - ref], ["prediction", "reference", "error"]):
            kw = dict(vmin=vmin, vmax=vmax, cmap="viridis") if name != "error" else dict(cmap="RdBu_r")
            if name == "error":
                m = np.abs(data).max() or 1.0
                kw.update(vmin=-m, vmax=m)
            im = ax.imshow(data.reshape(shape), origin="lower", extent=extent, aspect="auto", **kw)
            ax.set_title(name)
            ax.set_xlabel(problem.coord_names[1])
            ax.set_ylabel(problem.coord_names[0])
            fig.colorbar(im, ax=ax, shrink=0.85)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def loss_curve(path: Path, history: dict, title: str = "", loss_label: str = "batch loss (MSE, device units)") -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    loss = np.asarray(history["loss"])
    steps = np.asarray(history["step"])
    ax.semilogy(steps, loss, color="C0", alpha=0.25, lw=0.6, label=loss_label)
    w = max(1, len(loss) // 100)
    if len(loss) > w:
        smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
        ax.semilogy(steps[w - 1:], smooth, color="C0", lw=1.5, label=f"running mean ({w} steps)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if history.get("eval_step"):
        ax2 = ax.twinx()
        ax2.semilogy(history["eval_step"], history["test_rel_l2"], "C3o-", ms=3, label="test rel. L2")
        ax2.set_ylabel("test relative L2 error", color="C3")
    ax.legend(loc="upper right")
    ax.set_title(title)
    fig.tight_layout()
    _save(fig, path)
