"""Model zoo: every released DamoFD and SCRFD detector by name, with its metadata.

>>> from damofd.models import create_model, list_models
>>> model = create_model("damofd-0.5g")              # random init, training-ready
>>> model = create_model("scrfd-2.5g-kps")            # official SCRFD_2.5G_KPS architecture
>>> model = create_model(structure="SuperConvK3BNRELU(3,32,2,1)...")   # a searched backbone

Names are case-insensitive; ``_`` and ``-`` are interchangeable, so ``DamoFD_10G_KPS`` and
``scrfd_2.5g_bnkps`` work too. Each :class:`ModelInfo` carries the typed config, the published
accuracy with its protocol, the published cost, where the weights come from and their licence.
No weights are downloaded by this module.

This module is the registry (names → metadata and typed configs; it builds no module). Building
and loading live in :mod:`damofd.models.factory` (:func:`~damofd.models.factory.create_model`,
:func:`~damofd.models.factory.load_model`); the checkpoint file I/O is
:mod:`damofd.models.checkpoint`, a leaf. :data:`MODELSCOPE_MODELS` is the one table of official
ModelScope ids (re-exported by :mod:`damofd.models.modelscope`).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from damofd.errors import ConfigError
from damofd.models.bundled import (  # DEFAULT_MODEL re-exported: the zoo's default name
    DEFAULT_MODEL,
    BundledModel,
    get_bundled,
)
from damofd.models.configs import (
    DetectorConfig,
    MasterNetConfig,
    MobileNetV1Config,
    PAFPNConfig,
    ResNetV1eConfig,
    SCRFDHeadConfig,
)

__all__ = [
    "DEFAULT_MODEL",
    "MODELSCOPE_MODELS",
    "ModelInfo",
    "PublishedResult",
    "WeightSource",
    "bundled_name",
    "get_config",
    "get_model_info",
    "list_models",
    "resolve_name",
]

WIDER_VGA = (
    "WIDER FACE val, single scale: keep-ratio resize into 640×640 (VGA protocol), "
    "score_thr 0.02, NMS 0.45; Python port of the official protocol"
)


@dataclass(frozen=True)
class PublishedResult:
    """Published WIDER FACE val AP (%) and cost, quoted as printed by the authors."""

    easy: float
    medium: float
    hard: float
    flops: str  # as printed, e.g. "520M", "34.13G"
    params_m: float | None  # millions, as printed
    protocol: str
    source: str


@dataclass(frozen=True)
class WeightSource:
    """Where released weights can be obtained (nothing is downloaded automatically).

    ``kind``: ``"gdrive"`` / ``"onedrive"`` (mmdet ``.pth`` checkpoints), ``"modelscope"`` (a
    ModelScope model id holding ``pytorch_model.pt``), ``"onnx"`` (an official ONNX export, BN
    folded — import with :mod:`damofd.models.onnx_import`).
    """

    kind: Literal["gdrive", "onedrive", "modelscope", "onnx"]
    location: str
    note: str = ""


@dataclass(frozen=True)
class ModelInfo:
    """A zoo entry."""

    name: str
    config: DetectorConfig
    description: str
    released: bool
    reference_config: str
    published: PublishedResult | None = None
    weights: tuple[WeightSource, ...] = ()
    licence: str = ""
    notes: tuple[str, ...] = ()

    @property
    def family(self) -> str:
        return self.config.family

    @property
    def use_kps(self) -> bool:
        return self.config.use_kps

    @property
    def structure(self) -> str | None:
        """The DamoFD backbone structure string (None for SCRFD backbones)."""
        bb = self.config.backbone
        return bb.structure if isinstance(bb, MasterNetConfig) else None

    @property
    def count_gn(self) -> bool:
        """GroupNorm counted in the published FLOPs (DamoFD yes, SCRFD no)."""
        return self.family == "damofd"

    @property
    def bundled(self) -> BundledModel | None:
        """Weights trained by damofd and shipped in the package, if any (``damofd/weights``)."""
        return get_bundled(self.name)

    def to_dict(self) -> dict[str, object]:
        b = self.bundled
        return {
            "name": self.name,
            "bundled": None if b is None else b.to_dict(),
            "family": self.family,
            "use_kps": self.use_kps,
            "released": self.released,
            "description": self.description,
            "structure": self.structure,
            "reference_config": self.reference_config,
            "config": self.config.to_dict(),
            "published": dataclasses.asdict(self.published) if self.published else None,
            "weights": [dataclasses.asdict(w) for w in self.weights],
            "licence": self.licence,
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------------------------
# DamoFD (reference spec §3)
# --------------------------------------------------------------------------------------------
DAMOFD_STRUCTURES: dict[str, str] = {
    "0.5g": "SuperConvK3BNRELU(3,32,2,1)SuperResIDWE1K3(32,32,2,8,1)SuperResIDWE1K7(32,64,2,40,1)"
    "SuperResIDWE1K7(64,120,2,40,2)SuperResIDWE1K5(120,160,2,120,1)",
    "2.5g": "SuperConvK3BNRELU(3,24,2,2)SuperResK3K3(24,32,2,24,4)SuperResK3K3(32,56,2,16,4)"
    "SuperResK5K5(56,88,2,8,5)SuperResK1K5K1(88,128,2,8,4)",
    "10g": "SuperConvK3BNRELU(3,56,2,2)SuperResK1K3K1(56,80,2,40,5)SuperResK1K5K1(80,112,2,32,5)"
    "SuperResK1K3K1(112,168,2,16,4)SuperResK7K7(168,256,2,8,1)",
    "34g": "SuperConvK3BNRELU(3,56,2,2)SuperResK1K3K1(56,224,2,80,5)"
    "SuperResK1K3K1(224,488,2,40,6)SuperResK1K3K1(488,624,2,72,4)"
    "SuperResK1K7K1(624,816,2,24,3)",
}

# (neck in_channels as written in the config, neck out, stacked_convs, feat, GN groups, dw_conv)
_DAMOFD_NECK_HEAD: dict[str, tuple[tuple[int, ...], int, int, int, int, bool]] = {
    "0.5g": ((32, 64, 120, 160), 16, 2, 64, 16, True),
    "2.5g": ((32, 56, 88, 128), 24, 2, 64, 16, False),
    "10g": ((80, 112, 168, 256), 56, 3, 80, 16, False),
    "34g": ((192, 488, 624, 816), 128, 2, 256, 32, False),  # 192: reference quirk (§10.6)
}

# (Easy, Medium, Hard, FLOPs as printed, params M) from the ly19965/DamoFD README
_DAMOFD_PUBLISHED: dict[tuple[str, bool], tuple[float, float, float, str, float]] = {
    ("0.5g", False): (90.32, 88.36, 71.03, "520M", 0.26),
    ("2.5g", False): (92.82, 91.48, 78.70, "2.46G", 0.44),
    ("10g", False): (95.14, 94.29, 84.07, "9.74G", 1.27),
    ("34g", False): (95.63, 94.80, 85.08, "34.03G", 6.24),
    ("0.5g", True): (90.41, 88.45, 69.97, "593M", 0.27),
    ("2.5g", True): (93.25, 91.85, 78.17, "2.53G", 0.45),
    ("10g", True): (95.42, 94.35, 83.94, "9.83G", 1.28),
    ("34g", True): (95.96, 95.08, 86.09, "34.32G", 6.28),
}
#: Official ModelScope model ids → damofd zoo names (all released ids are keypoint models).
MODELSCOPE_MODELS: dict[str, str] = {
    "damo/cv_ddsar_face-detection_iclr23-damofd": "damofd-0.5g-kps",
    "damo/cv_ddsar_face-detection_iclr23-damofd-2.5G": "damofd-2.5g-kps",
    "damo/cv_ddsar_face-detection_iclr23-damofd-10G": "damofd-10g-kps",
    "damo/cv_ddsar_face-detection_iclr23-damofd-34G": "damofd-34g-kps",
}
_DAMOFD_GDRIVE = (
    "https://drive.google.com/drive/folders/1WbPKfsQ3G9j7c-kxLIQddQ6W7xK8mAQ_?usp=share_link"
)
_DAMOFD_LICENCE = (
    "weights released by the DamoFD authors (ly19965/DamoFD README, ModelScope model cards); "
    "no licence file ships with ly19965/DamoFD — check the ModelScope model card before use"
)


def _damofd_config(size: str, use_kps: bool) -> DetectorConfig:
    neck_in, neck_out, stacked, feat, groups, dw = _DAMOFD_NECK_HEAD[size]
    return DetectorConfig(
        backbone=MasterNetConfig(DAMOFD_STRUCTURES[size]),
        neck=PAFPNConfig(in_channels=neck_in, out_channels=neck_out),
        head=SCRFDHeadConfig(
            in_channels=neck_out,
            feat_channels=feat,
            stacked_convs=stacked,
            norm="gn",
            num_groups=groups,
            dw_conv=dw,
            strides_share=True,
            scale_mode=2,
            use_kps=use_kps,
        ),
    )


def _damofd_entry(size: str, use_kps: bool) -> ModelInfo:
    e, m, h, flops, params = _DAMOFD_PUBLISHED[(size, use_kps)]
    upper = size.upper()
    name = f"damofd-{size}" + ("-kps" if use_kps else "")
    cfg = (
        f"ly19965/DamoFD:configs/DamoFD_lmks/DamoFD_{size}_lms.py"
        if use_kps
        else f"ly19965/DamoFD:configs/DamoFD/DamoFD_{size}.py"
    )
    if use_kps:
        weights = (
            WeightSource(
                "modelscope",
                next(i for i, n in MODELSCOPE_MODELS.items() if n == name),
                "pytorch_model.pt (mmcv checkpoint; loads with damofd.models.load_checkpoint)",
            ),
        )
    else:
        weights = (WeightSource("gdrive", _DAMOFD_GDRIVE, f"DamoFD_{upper} mmdet checkpoint"),)
    notes: list[str] = []
    if size == "34g":
        notes.append(
            "neck in_channels[0] is 192 in the reference config (true C2 width 224); "
            "unused because start_level = 1"
        )
        if not use_kps:
            notes.append("paper Table 2 prints Hard 86.08; the README prints 85.08")
    return ModelInfo(
        name=name,
        config=_damofd_config(size, use_kps),
        description=f"DamoFD-{upper}{' with 5 keypoints' if use_kps else ''}: DDSAR-searched "
        "MasterNet backbone, PAFPN, GN SCRFDHead",
        released=True,
        reference_config=cfg,
        published=PublishedResult(
            e,
            m,
            h,
            flops,
            params,
            WIDER_VGA,
            "ly19965/DamoFD README (FLOPs at 640×480, GN counted)",
        ),
        weights=weights,
        licence=_DAMOFD_LICENCE,
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------------------------
# damofd's own variants (not in the paper; trained by this package, docs/model-card.md)
# --------------------------------------------------------------------------------------------
BNKPS_HEAD_FROM = "scrfd-500m-kps"
"""The zoo model whose head ``damofd-0.5g-bnkps`` takes (BN, one head per level, no Scale)."""


def _damofd_bnkps_entry() -> ModelInfo:
    """DamoFD-0.5G-KPS's backbone and neck with SCRFD-500M-KPS's BN head (issue 10): at a CPU
    budget the published GN head shared by the levels learns the stride-8 faces far later."""
    head = _scrfd_configs()[BNKPS_HEAD_FROM.removeprefix("scrfd-")][1].head
    config = dataclasses.replace(_damofd_config("0.5g", use_kps=True), head=head)
    return ModelInfo(
        name="damofd-0.5g-bnkps",
        config=config,
        description="DamoFD-0.5G backbone (DDSAR-searched MasterNet) and PAFPN with "
        "SCRFD-500M-KPS's BN SCRFDHead (one per level, no Scale), with 5 keypoints",
        released=False,
        reference_config="damofd: DamoFD_0.5G_lms with the bbox_head of scrfd_500m_bnkps "
        "(docs/model-card.md, 'It is the head')",
        licence="architecture only; weights trained by damofd are listed by `damofd zoo` "
        "when bundled",
        notes=(
            "not a published model: damofd's variant for short CPU training budgets",
            "the same backbone and neck as damofd-0.5g-kps (official weights of which load "
            "into them), the head of scrfd-500m-kps",
        ),
    )


# --------------------------------------------------------------------------------------------
# SCRFD (scrfd-spec §1–3, §6)
# --------------------------------------------------------------------------------------------
_MBV1_500M = MobileNetV1Config((16, 16, 40, 72, 152, 288), (2, 3, 2, 6))
_MBV1_1G = MobileNetV1Config((32, 48, 48, 160, 216, 312), (3, 2, 1, 5))
_RES_1_3G = ResNetV1eConfig("basic", (3, 5, 3, 2), (16, 32, 40, 72), 16)
_RES_2_5G = ResNetV1eConfig("basic", (3, 5, 3, 2), (24, 48, 48, 80), 24)
_RES_10G = ResNetV1eConfig("basic", (3, 4, 2, 3), (56, 88, 88, 224), 56)
_RES_34G = ResNetV1eConfig("bottleneck", (17, 16, 2, 8), (56, 56, 144, 184), 56)

_SCRFD_LICENCE = "insightface SCRFD weights: non-commercial research purposes only (code MIT)"
_SCRFD_ONEDRIVE = {
    "500m": "https://1drv.ms/u/s!AswpsDO2toNKqyYWxScdiTITY4TQ?e=DjXof9",
    "1g": "https://1drv.ms/u/s!AswpsDO2toNKqyPVLI44ahNBsOMR?e=esPrBL",
    "2.5g": "https://1drv.ms/u/s!AswpsDO2toNKqyTIXnzB1ujPq4th?e=5t1VNv",
    "10g": "https://1drv.ms/u/s!AswpsDO2toNKqyUKwTiwXv2kaa8o?e=umfepO",
    "34g": "https://1drv.ms/u/s!AswpsDO2toNKqyKZwFebVlmlOvzz?e=V2rqUy",
    "500m-kps": "https://1drv.ms/u/s!AswpsDO2toNKri_NDM0GIkPpkE2f?e=JkebJo",
    "2.5g-kps": "https://1drv.ms/u/s!AswpsDO2toNKqyGlhxnCg3smyQqX?e=A6Hufm",
    "10g-kps": "https://1drv.ms/u/s!AswpsDO2toNKqycsF19UbaCWaLWx?e=F6i5Vm",
}
_SCRFD_ONNX: dict[str, tuple[WeightSource, ...]] = {
    "500m": (WeightSource("onnx", "scrfd_500m.onnx", "ppogg/onnx-scrfd-flask; GN head"),),
    "1g": (WeightSource("onnx", "scrfd_1g.onnx", "ppogg/onnx-scrfd-flask; GN head"),),
    "2.5g": (WeightSource("onnx", "scrfd_2.5g.onnx", "ppogg/onnx-scrfd-flask; GN head"),),
    "500m-kps": (
        WeightSource("onnx", "det_500m.onnx", "insightface model pack buffalo_sc"),
        WeightSource(
            "onnx", "scrfd_500m_bnkps.onnx", "ShiqiYu/libfacedetection.train; dynamic batch"
        ),
    ),
    "2.5g-kps": (WeightSource("onnx", "det_2.5g.onnx", "insightface model pack buffalo_m"),),
    "10g-kps": (WeightSource("onnx", "det_10g.onnx", "insightface model pack buffalo_l"),),
}
_SCRFD_PUBLISHED: dict[str, tuple[float, float, float, str, float]] = {
    "500m": (90.57, 88.12, 68.51, "0.508G", 0.57),
    "1g": (92.38, 90.57, 74.80, "1G", 0.64),
    "2.5g": (93.78, 92.16, 77.87, "2.53G", 0.67),
    "10g": (95.16, 93.87, 83.05, "9.98G", 3.86),
    "34g": (96.06, 94.92, 85.29, "34.13G", 9.80),
    "500m-kps": (90.97, 88.44, 69.49, "500M", 0.57),
    "2.5g-kps": (93.80, 92.02, 77.13, "2.5G", 0.82),
    "10g-kps": (95.40, 94.01, 82.80, "10G", 4.23),
}


def _scrfd_head(
    neck_out: int,
    feat: int,
    stacked: int,
    *,
    dw: bool,
    norm: Literal["gn", "bn"],
    groups: int = 16,
    share: bool = True,
    scale_mode: int = 2,
    kps: bool = False,
) -> SCRFDHeadConfig:
    return SCRFDHeadConfig(
        in_channels=neck_out,
        feat_channels=feat,
        stacked_convs=stacked,
        norm=norm,
        num_groups=groups,
        dw_conv=dw,
        strides_share=share,
        scale_mode=scale_mode,
        use_kps=kps,
    )


def _scrfd_configs() -> dict[str, tuple[str, DetectorConfig]]:
    """zoo suffix → (reference config file stem, detector config)."""

    def det(bb, neck_out: int, head: SCRFDHeadConfig) -> DetectorConfig:
        return DetectorConfig(bb, PAFPNConfig(bb.out_channels, neck_out), head)

    return {
        "500m": ("scrfd_500m", det(_MBV1_500M, 16, _scrfd_head(16, 64, 2, dw=True, norm="gn"))),
        "500m-kps": (
            "scrfd_500m_bnkps",
            det(
                _MBV1_500M,
                16,
                _scrfd_head(16, 64, 2, dw=True, norm="bn", share=False, scale_mode=0, kps=True),
            ),
        ),
        "1g": ("scrfd_1g", det(_MBV1_1G, 24, _scrfd_head(24, 96, 2, dw=True, norm="gn", groups=8))),
        "1g-bn": (
            "scrfd_1gbn",
            det(_MBV1_1G, 24, _scrfd_head(24, 96, 2, dw=True, norm="bn", share=False)),
        ),
        "1.3g": ("scrfd_1.3g", det(_RES_1_3G, 24, _scrfd_head(24, 48, 2, dw=False, norm="gn"))),
        "2.5g": ("scrfd_2.5g", det(_RES_2_5G, 24, _scrfd_head(24, 64, 2, dw=False, norm="gn"))),
        "2.5g-kps": (
            "scrfd_2.5g_bnkps",
            det(_RES_2_5G, 24, _scrfd_head(24, 64, 2, dw=False, norm="bn", share=False, kps=True)),
        ),
        "10g": ("scrfd_10g", det(_RES_10G, 56, _scrfd_head(56, 80, 3, dw=False, norm="gn"))),
        "10g-kps": (
            "scrfd_10g_bnkps",
            det(_RES_10G, 56, _scrfd_head(56, 80, 3, dw=False, norm="bn", share=False, kps=True)),
        ),
        "34g": (
            "scrfd_34g",
            det(_RES_34G, 128, _scrfd_head(128, 256, 2, dw=False, norm="gn", groups=32)),
        ),
    }


def _scrfd_entry(suffix: str, stem: str, config: DetectorConfig) -> ModelInfo:
    released = suffix in _SCRFD_PUBLISHED
    pretty = "SCRFD_" + suffix.upper().replace("-KPS", "_KPS").replace("-BN", "BN")
    published = None
    weights: tuple[WeightSource, ...] = ()
    notes: list[str] = []
    if released:
        e, m, h, flops, params = _SCRFD_PUBLISHED[suffix]
        published = PublishedResult(
            e,
            m,
            h,
            flops,
            params,
            WIDER_VGA,
            "deepinsight/insightface:detection/scrfd/README.md (FLOPs: mmcv 1.2.6 rules, GN not "
            "counted, truncated)",
        )
        weights = (
            WeightSource("onedrive", _SCRFD_ONEDRIVE[suffix], f"{pretty} mmdet checkpoint"),
            *_SCRFD_ONNX.get(suffix, ()),
        )
    else:
        notes.append("config in the insightface repository; no weights were released")
    if config.use_kps:
        notes.append(
            "BN head with separate weights per stride (not the plain model plus a kps branch)"
        )
    if suffix == "500m-kps":
        notes.append(
            "no learnable Scale (scale_mode 0); the README's 0.57M params is the "
            "500M value — this model has 631,410 parameters"
        )
    kind = "MobileNetV1" if isinstance(config.backbone, MobileNetV1Config) else "ResNetV1e"
    return ModelInfo(
        name=f"scrfd-{suffix}",
        config=config,
        description=f"{pretty}: {kind} backbone, PAFPN, "
        f"{config.head.norm.upper()} SCRFDHead" + (" with 5 keypoints" if config.use_kps else ""),
        released=released,
        reference_config=f"deepinsight/insightface:detection/scrfd/configs/scrfd/{stem}.py",
        published=published,
        weights=weights,
        licence=_SCRFD_LICENCE,
        notes=tuple(notes),
    )


@lru_cache(maxsize=1)
def _registry() -> dict[str, ModelInfo]:
    reg: dict[str, ModelInfo] = {}
    for size in ("0.5g", "2.5g", "10g", "34g"):
        for kps in (False, True):
            info = _damofd_entry(size, kps)
            reg[info.name] = info
    bnkps = _damofd_bnkps_entry()
    reg[bnkps.name] = bnkps
    for suffix, (stem, cfg) in _scrfd_configs().items():
        info = _scrfd_entry(suffix, stem, cfg)
        reg[info.name] = info
    return reg


_ALIASES = {
    "scrfd-500m-bnkps": "scrfd-500m-kps",
    "scrfd-2.5g-bnkps": "scrfd-2.5g-kps",
    "scrfd-10g-bnkps": "scrfd-10g-kps",
    "scrfd-1gbn": "scrfd-1g-bn",
    "damofd-0.5g-lms": "damofd-0.5g-kps",
    "damofd-2.5g-lms": "damofd-2.5g-kps",
    "damofd-10g-lms": "damofd-10g-kps",
    "damofd-34g-lms": "damofd-34g-kps",
    "damofd-500m": "damofd-0.5g",
    "damofd-500m-kps": "damofd-0.5g-kps",
    "damofd-500m-bnkps": "damofd-0.5g-bnkps",
}


def resolve_name(name: str) -> str:
    """Canonical zoo name for ``name`` (case, ``_``/``-`` and aliases such as ``_bnkps``).

    Raises :class:`ConfigError` listing the valid names (and the closest ones).
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"model name must be a non-empty string, got {name!r}")
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    reg = _registry()
    if key in reg:
        return key
    close = difflib.get_close_matches(key, list(reg), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown model {name!r}{hint} (valid: {', '.join(reg)})")


def get_model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a zoo name."""
    return _registry()[resolve_name(name)]


def get_config(name: str) -> DetectorConfig:
    """The typed :class:`DetectorConfig` of a zoo name."""
    return get_model_info(name).config


def list_models(
    family: str | None = None, *, use_kps: bool | None = None, released_only: bool = False
) -> list[str]:
    """Zoo names, optionally filtered by family (``"damofd"``/``"scrfd"``), kps and release."""
    out = []
    for name, info in _registry().items():
        if family is not None and info.family != family.lower():
            continue
        if use_kps is not None and info.use_kps != use_kps:
            continue
        if released_only and not info.released:
            continue
        out.append(name)
    return out


def bundled_name(spec: object) -> str | None:
    """The canonical zoo name when ``spec`` is a string naming a zoo model (aliases allowed) that
    has bundled weights and is not an existing file or folder; else ``None``."""
    if not isinstance(spec, (str, os.PathLike)):
        return None
    s = os.fspath(spec)
    if not isinstance(s, str) or Path(s).exists():
        return None
    try:
        name = resolve_name(s)
    except ConfigError:
        return None
    return name if get_bundled(name) is not None else None
