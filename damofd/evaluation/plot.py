"""PR-curve plots of a :class:`~damofd.evaluation.widerface.WiderResult` (needs matplotlib).

matplotlib is an optional extra: ``pip install 'damofd[plot]'``. Without it
:func:`plot_pr_curves` raises :class:`PlotUnavailableError` with that instruction.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from damofd.errors import DamoFDError
from damofd.io import atomic_write_bytes

if TYPE_CHECKING:
    from damofd.evaluation.widerface import WiderResult

__all__ = ["PlotUnavailableError", "plot_pr_curves", "require_matplotlib"]


class PlotUnavailableError(DamoFDError, ImportError):
    """matplotlib is not installed."""


def require_matplotlib() -> Any:
    """Import matplotlib with the non-interactive Agg backend, or raise a clear error."""
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailableError(
            "plotting PR curves needs matplotlib, which is not installed: "
            "pip install 'damofd[plot]' (or pip install matplotlib)"
        ) from None
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_pr_curves(
    results: WiderResult | dict[str, WiderResult],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Draw the Easy/Medium/Hard precision–recall curves into a PNG at ``path`` (atomic write).

    ``results`` is one result, or ``{label: result}`` to overlay several detectors; the legend
    shows each curve's AP in percent. Thresholds where precision is undefined (no proposal, the
    reference's 0/0) are left out of the curve.
    """
    plt = require_matplotlib()
    runs = results if isinstance(results, dict) else {"": results}
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.4), sharey=True)
    try:
        for ax, setting in zip(axes, ("easy", "medium", "hard")):
            for label, res in runs.items():
                r = res.settings[setting]
                ok = ~np.isnan(r.precision)
                name = f"{label} " if label else ""
                ax.plot(r.recall[ok], r.precision[ok], lw=1.6, label=f"{name}{100 * r.ap:.2f}")
            faces = next(iter(runs.values())).settings[setting].count_face
            ax.set_title(f"{setting.capitalize()} ({faces} faces)")
            ax.set_xlabel("recall")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.01)
            ax.grid(alpha=0.3)
            ax.legend(title="AP (%)", loc="lower left", fontsize=8)
        axes[0].set_ylabel("precision")
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
