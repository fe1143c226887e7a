"""The DamoFD ModelScope model card's two snippets (inference, training) run on damofd with only
their imports changed (``modelscope.*`` → ``damofd.compat``), on local files.

Local instead of remote: the model id and the dataset resolve from damofd's cache
(``$DAMOFD_CACHE``), which this test fills with a ModelScope-layout model folder written by
``save_modelscope_dir`` and a WIDER-style split built from the shared train images; the image URL
becomes the committed sample photo (the card says it accepts a URL or a local path).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests._train_util import MECHANICS_IMAGES, make_small_dataset

ROOT = Path(__file__).resolve().parents[1]
MODEL_ID = "damo/cv_ddsar_face-detection_iclr23-damofd-10G"

# --- the card's inference snippet; only the three import lines differ --------------------------
INFERENCE = """
import cv2
from damofd.compat import pipeline
from damofd.compat import  Tasks

face_detection = pipeline(task=Tasks.face_detection, model='damo/cv_ddsar_face-detection_iclr23-damofd-10G')
# 支持 url image and abs dir image path
img_path = IMG_PATH
result = face_detection(img_path)

# 提供可视化结果
from damofd.compat import draw_face_detection_result
from damofd.compat import LoadImage
img = LoadImage.convert_to_ndarray(img_path)
cv2.imwrite('srcImg.jpg', img)
img_draw = draw_face_detection_result('srcImg.jpg', result)
import matplotlib.pyplot as plt
plt.imshow(img_draw)
"""

# --- the card's training snippet; only the four import lines differ ----------------------------
TRAINING = """
import os
import tempfile
from damofd.compat import MsDataset
from damofd.compat import Trainers
from damofd.compat import build_trainer
from damofd.compat import snapshot_download

model_id = 'damo/cv_ddsar_face-detection_iclr23-damofd-10G'
ms_ds_widerface = MsDataset.load('WIDER_FACE_mini', namespace='shaoxuan')  # remove '_mini' for full dataset

data_path = ms_ds_widerface.config_kwargs['split_config']
train_dir = data_path['train']
val_dir = data_path['validation']

def get_name(dir_name):
    names = [i for i in os.listdir(dir_name) if not i.startswith('_')]
    return names[0]

train_root = train_dir + '/' + get_name(train_dir) + '/'
val_root = val_dir + '/' + get_name(val_dir) + '/'
cache_path = snapshot_download(model_id)
tmp_dir = tempfile.TemporaryDirectory().name
if not os.path.exists(tmp_dir):
    os.makedirs(tmp_dir)

def _cfg_modify_fn(cfg):
    cfg.checkpoint_config.interval = 1
    cfg.log_config.interval = 10
    cfg.evaluation.interval = 1
    cfg.data.workers_per_gpu = 1
    cfg.data.samples_per_gpu = 4
    return cfg

kwargs = dict(
    cfg_file=os.path.join(cache_path, 'DamoFD_lms.py'),
    work_dir=tmp_dir,
    train_root=train_root,
    val_root=val_root,
    total_epochs=1,  # run #epochs
    cfg_modify_fn=_cfg_modify_fn)

trainer = build_trainer(name=Trainers.face_detection_scrfd, default_args=kwargs)
trainer.train()
"""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from damofd.models.factory import create_model
    from damofd.models.modelscope import save_modelscope_dir

    root = tmp_path / "cache"
    monkeypatch.setenv("DAMOFD_CACHE", str(root))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    save_modelscope_dir(create_model("damofd-10g-kps"), root / "modelscope" / MODEL_ID)
    return root


def test_inference_snippet(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    ns: dict = {"IMG_PATH": str(ROOT / "examples" / "astronaut.jpg")}
    exec(compile(INFERENCE, "modelscope_card_inference", "exec"), ns)
    assert set(ns["result"]) >= {"scores", "boxes", "keypoints"}
    assert ns["img"].shape == (512, 512, 3)
    assert (ns["img"][..., ::-1] == __import__("cv2").imread(ns["IMG_PATH"])).all()  # RGB
    assert ns["img_draw"].shape == (512, 512, 3)
    assert (tmp_path / "srcImg.jpg").is_file()


@pytest.mark.assets
@pytest.mark.slow
def test_training_snippet(assets: Path, cache: Path, tmp_path: Path) -> None:
    ds = cache / "datasets" / "shaoxuan" / "WIDER_FACE_mini"
    make_small_dataset(assets, ds / "train" / "WIDER_FACE_mini", MECHANICS_IMAGES[:4], 64)
    make_small_dataset(assets, ds / "validation" / "WIDER_FACE_mini", MECHANICS_IMAGES[4:], 64)
    ns: dict = {}
    exec(compile(TRAINING, "modelscope_card_training", "exec"), ns)
    work = Path(ns["tmp_dir"])
    assert (work / "latest.pth").is_file() and (work / "epoch_1.pth").is_file()
    assert ns["trainer"].state.epoch == 1
