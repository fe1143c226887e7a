"""WIDER FACE evaluation: the official Easy/Medium/Hard AP protocol, exact and vectorised.

Pure NumPy/SciPy (no torch)::

    from damofd.evaluation import evaluate_wider
    res = evaluate_wider("widerface_txt.tar.gz", "ground_truth/")      # or {name: (N,5) xywh+score}
    print(res.easy, res.medium, res.hard)                               # fractions in [0, 1]

See :mod:`damofd.evaluation.widerface` for the protocol and docs/evaluation.md for usage.
"""

from damofd.evaluation.ground_truth import GT_FILES, SETTINGS, WiderGroundTruth, load_wider_gt
from damofd.evaluation.plot import PlotUnavailableError, plot_pr_curves
from damofd.evaluation.predictions import (
    WiderPredictions,
    image_name,
    predictions_from_mapping,
    read_predictions,
)
from damofd.evaluation.size_recall import (
    DEFAULT_SIZE_EDGES,
    SizeBin,
    SizeRecall,
    recall_by_size,
)
from damofd.evaluation.widerface import (
    SettingResult,
    WiderResult,
    evaluate_wider,
    match_predictions,
    normalise_scores,
    pr_thresholds,
    voc_ap,
)

__all__ = [
    "DEFAULT_SIZE_EDGES",
    "GT_FILES",
    "SETTINGS",
    "PlotUnavailableError",
    "SettingResult",
    "SizeBin",
    "SizeRecall",
    "WiderGroundTruth",
    "WiderPredictions",
    "WiderResult",
    "evaluate_wider",
    "image_name",
    "load_wider_gt",
    "match_predictions",
    "normalise_scores",
    "plot_pr_curves",
    "pr_thresholds",
    "predictions_from_mapping",
    "read_predictions",
    "recall_by_size",
    "voc_ap",
]
