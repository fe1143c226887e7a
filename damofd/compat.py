"""ModelScope names, so the DamoFD model card's code ports by changing its imports only.

* ``modelscope.pipelines.pipeline``, ``modelscope.utils.constant.Tasks`` →
  ``damofd.compat.pipeline``, ``damofd.compat.Tasks``
* ``modelscope.utils.cv.image_utils.draw_face_detection_result`` →
  ``damofd.compat.draw_face_detection_result``
* ``modelscope.preprocessors.image.LoadImage`` → ``damofd.compat.LoadImage``
* ``modelscope.metainfo.Trainers``, ``modelscope.trainers.build_trainer`` →
  ``damofd.compat.Trainers``, ``damofd.compat.build_trainer``
* ``modelscope.hub.snapshot_download.snapshot_download`` → ``damofd.compat.snapshot_download``
* ``modelscope.msdatasets.MsDataset`` → ``damofd.compat.MsDataset``

Models and datasets are looked up in damofd's cache first (``$DAMOFD_CACHE/modelscope/<owner>/
<name>`` for models, ``$DAMOFD_CACHE/datasets/<namespace>/<name>`` for datasets; default
``~/.cache/damofd``), then fetched with the official ``modelscope`` client when it is installed
(``pip install 'damofd[hub]'``). Offline and uncached, the error says what to put where.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from damofd.errors import ConfigError, InputError
from damofd.inference.draw import draw_face_detection_result
from damofd.inference.pipeline import Tasks, pipeline

__all__ = [
    "LoadImage",
    "MsDataset",
    "Tasks",
    "Trainers",
    "build_trainer",
    "draw_face_detection_result",
    "pipeline",
    "snapshot_download",
]


class Trainers:
    """The trainer names of ``modelscope.metainfo.Trainers`` that damofd serves."""

    face_detection_scrfd = "face-detection-scrfd"


class LoadImage:
    """``modelscope.preprocessors.image.LoadImage``'s static loader."""

    @staticmethod
    def convert_to_ndarray(input: Any) -> np.ndarray:
        """An image (path, URL, bytes, ``PIL.Image`` or BGR array) as an **RGB** uint8 array,
        as ModelScope returns it (its ``load_image`` decodes with PIL in RGB)."""
        from damofd.inference.image_io import load_image

        return np.ascontiguousarray(load_image(input)[:, :, ::-1])


def build_trainer(name: str | None = None, default_args: Mapping[str, Any] | None = None) -> Any:
    """``modelscope.trainers.build_trainer(name=Trainers.face_detection_scrfd,
    default_args=dict(cfg_file=..., work_dir=..., train_root=..., val_root=..., total_epochs=...,
    cfg_modify_fn=...))`` → :func:`damofd.training.build_trainer`."""
    from damofd.training.api import build_trainer as _build

    if name not in (None, Trainers.face_detection_scrfd):
        raise ConfigError(
            f"build_trainer: unknown trainer {name!r}; damofd serves "
            f"{Trainers.face_detection_scrfd!r} (Trainers.face_detection_scrfd)"
        )
    return _build(**dict(default_args or {}), name=name)


def _cache_root() -> Path:
    from damofd.models.modelscope import CACHE_ENV

    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "damofd"


def snapshot_download(
    model_id: str, cache_dir: str | os.PathLike[str] | None = None, revision: str | None = None
) -> str:
    """Local folder of a ModelScope model repository: damofd's cache, else the official client
    (:func:`damofd.models.modelscope.download_modelscope`)."""
    from damofd.models.modelscope import (
        MODELSCOPE_FILES,
        _canonical_id,
        _id_dir,
        download_modelscope,
        modelscope_cache_dir,
    )

    mid = _canonical_id(model_id)
    cache = Path(cache_dir) if cache_dir is not None else modelscope_cache_dir()
    local = _id_dir(mid, cache)
    if all((local / f).is_file() for f in MODELSCOPE_FILES):
        return str(local)
    return str(download_modelscope(mid, cache_dir=cache, revision=revision))


class MsDataset:
    """``modelscope.msdatasets.MsDataset.load`` for datasets laid out as split folders.

    ``load(name, namespace=...)`` returns a dataset whose ``config_kwargs['split_config']`` maps
    ``train`` / ``validation`` (/ ``test``) to local folders, as ModelScope's does for WIDER FACE
    (each split folder holds one dataset folder with ``labelv2.txt`` + ``images/``).
    """

    SPLITS = ("train", "validation", "test")

    def __init__(self, name: str, split_config: Mapping[str, str]) -> None:
        self.name = name
        self.config_kwargs: dict[str, Any] = {"split_config": dict(split_config)}

    @classmethod
    def load(cls, dataset_name: str, namespace: str | None = None, **kwargs: Any) -> MsDataset:
        folder = _cache_root() / "datasets" / (namespace or "_") / dataset_name
        splits = {s: str(folder / s) for s in cls.SPLITS if (folder / s).is_dir()}
        if splits:
            return cls(dataset_name, splits)
        try:
            from modelscope.msdatasets import MsDataset as _Official
        except ImportError:
            raise InputError(
                f"dataset {namespace}/{dataset_name} is not in damofd's cache: put its split "
                f"folders ({', '.join(cls.SPLITS[:2])}, each holding one folder with labelv2.txt "
                f"+ images/) under {folder}, or install the hub client: pip install 'damofd[hub]'"
            ) from None
        official = _Official.load(dataset_name, namespace=namespace, **kwargs)
        return cls(dataset_name, official.config_kwargs["split_config"])
