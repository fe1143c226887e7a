"""mmcv config files: read them without executing them, and translate between their ``model``
dict and damofd's typed :class:`~damofd.models.configs.DetectorConfig`.

* :func:`read_mmcv_config` — the top-level assignments of an mmcv config (a Python file of dict
  literals, e.g. the ``DamoFD_lms.py`` of a ModelScope repository), evaluated with a small ``ast``
  interpreter that understands literals, ``dict(...)``, arithmetic and names bound earlier in the
  file (``_base_`` files are merged); the file is **never executed**;
* :func:`config_from_mmcv` / :func:`mmcv_model_dict` — the mmdet ``model`` dict ↔ typed config;
* :func:`mmcv_config_text` — an mmcv config file for a typed config.

The ModelScope folder and hub I/O that uses these is :mod:`damofd.models.modelscope`.
"""

from __future__ import annotations

import ast
import operator
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from damofd.constants import WIDER_SCORE_THR
from damofd.errors import ConfigError, InputError
from damofd.models.configs import (
    DetectorConfig,
    MasterNetConfig,
    MobileNetV1Config,
    PAFPNConfig,
    ResNetV1eConfig,
    SCRFDHeadConfig,
)

__all__ = ["config_from_mmcv", "mmcv_config_text", "mmcv_model_dict", "read_mmcv_config"]


# --------------------------------------------------------------------------------------------
# mmcv config files, read without executing them
# --------------------------------------------------------------------------------------------

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNOPS: dict[type, Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Not: operator.not_,
}
_CALLS: dict[str, Callable[..., Any]] = {
    "dict": dict,
    "list": list,
    "tuple": tuple,
    "set": set,
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "range": lambda *a: list(range(*a)),
    "len": len,
    "min": min,
    "max": max,
    "abs": abs,
}


class _Unsupported(Exception):
    """An expression the safe evaluator does not interpret."""


def _eval(node: ast.AST, env: Mapping[str, Any]) -> Any:
    """Evaluate a config expression: literals, containers, ``dict(...)``-style calls of a few
    builtins, arithmetic, comparisons, subscripts and names bound earlier. Nothing else runs."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        if node.id in ("True", "False", "None"):  # pragma: no cover (py<3.8 style)
            return {"True": True, "False": False, "None": None}[node.id]
        raise _Unsupported(f"unknown name {node.id!r}")
    if isinstance(node, ast.List):
        return [_eval(e, env) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_eval(e, env) for e in node.elts)
    if isinstance(node, ast.Set):
        return {_eval(e, env) for e in node.elts}
    if isinstance(node, ast.Dict):
        out: dict[Any, Any] = {}
        for k, v in zip(node.keys, node.values):
            if k is None:  # {**other}
                out.update(_eval(v, env))
            else:
                out[_eval(k, env)] = _eval(v, env)
        return out
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_eval(node.left, env), _eval(node.right, env))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNOPS:
        return _UNOPS[type(node.op)](_eval(node.operand, env))
    if isinstance(node, ast.Subscript):
        return _eval(node.value, env)[_eval(node.slice, env)]
    if isinstance(node, ast.Slice):
        lo, hi, st = (
            None if x is None else _eval(x, env) for x in (node.lower, node.upper, node.step)
        )
        return slice(lo, hi, st)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CALLS:
        if node.func.id in env:
            raise _Unsupported(f"{node.func.id!r} is rebound in the file")
        args = []
        for a in node.args:
            if isinstance(a, ast.Starred):
                args.extend(_eval(a.value, env))
            else:
                args.append(_eval(a, env))
        kwargs: dict[str, Any] = {}
        for kw in node.keywords:
            if kw.arg is None:
                kwargs.update(_eval(kw.value, env))
            else:
                kwargs[kw.arg] = _eval(kw.value, env)
        return _CALLS[node.func.id](*args, **kwargs)
    raise _Unsupported(f"{type(node).__name__} expressions are not interpreted")


def _merge(base: dict[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """mmcv inheritance: dicts merge recursively unless the child sets ``_delete_=True``."""
    out = dict(base)
    for k, v in child.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and not v.get("_delete_", False):
            out[k] = _merge(out[k], v)
        elif isinstance(v, dict):
            out[k] = {kk: vv for kk, vv in v.items() if kk != "_delete_"}
        else:
            out[k] = v
    return out


def read_mmcv_config(path: str | os.PathLike[str], *, _depth: int = 0) -> dict[str, Any]:
    """The top-level variables of an mmcv config file, evaluated without executing the file.

    Only assignments of plain data are interpreted (see :func:`_eval`); ``import`` statements
    are ignored, and an assignment the evaluator cannot interpret is skipped — unless a later
    statement needs it. ``_base_`` files (a path or a list of paths, relative to the file) are
    read first and merged the mmcv way.

    Raises:
        InputError: missing file, syntax error, or a ``_base_`` that cannot be resolved; the
            message names the file and line.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: mmcv config file not found")
    if _depth > 8:
        raise InputError(f"{p}: _base_ inheritance deeper than 8 levels")
    try:
        tree = ast.parse(p.read_text(encoding="utf-8"), filename=str(p))
    except SyntaxError as exc:
        raise InputError(f"{p}:{exc.lineno}: not a valid Python config ({exc.msg})") from None
    env: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        else:
            continue  # imports, docstrings, function definitions: never run
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        if len(names) != len(targets):
            continue
        try:
            v = _eval(value, env)
        except _Unsupported as exc:
            for n in names:
                env.pop(n, None)
                skipped[n] = f"{p}:{stmt.lineno}: {exc}"
            continue
        except Exception as exc:  # e.g. a TypeError inside dict(...)
            for n in names:
                env.pop(n, None)
                skipped[n] = f"{p}:{stmt.lineno}: {type(exc).__name__}: {exc}"
            continue
        for n in names:
            env[n] = v
            skipped.pop(n, None)
    base = env.pop("_base_", None)
    if base is not None:
        merged: dict[str, Any] = {}
        for b in [base] if isinstance(base, str) else list(base):
            bp = (p.parent / str(b)).resolve()
            merged = _merge(merged, read_mmcv_config(bp, _depth=_depth + 1))
        env = _merge(merged, env)
    if skipped:
        env["__skipped__"] = skipped
    return env


# --------------------------------------------------------------------------------------------
# mmcv model dict <-> typed DetectorConfig
# --------------------------------------------------------------------------------------------


def _need(d: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise ConfigError(f"{where}: missing {key!r}")
    return d[key]


def config_from_mmcv(cfg: Mapping[str, Any], *, where: str = "config") -> DetectorConfig:
    """Translate an mmcv/mmdet ``model = dict(type='SCRFD', backbone=…, neck=…, bbox_head=…)``
    (the whole config namespace or just the model dict) into a :class:`DetectorConfig`.

    Supported backbones: ``MasterNet`` (``plainnet_struct``), ``MobileNetV1`` and ``ResNetV1e``
    (``block_cfg``). Raises :class:`~damofd.errors.ConfigError` naming the missing or
    unsupported entry.
    """
    if "model" in cfg and isinstance(cfg["model"], Mapping):
        model = cfg["model"]
    elif "backbone" in cfg:
        model = cfg
    else:
        skipped = cfg.get("__skipped__", {}) if isinstance(cfg, Mapping) else {}
        hint = f" ({skipped['model']})" if "model" in skipped else ""
        raise ConfigError(f"{where}: no 'model' dict found{hint}")
    mtype = model.get("type", "SCRFD")
    if mtype != "SCRFD":
        raise ConfigError(f"{where}: model type {mtype!r} is not supported (expected 'SCRFD')")
    bb = _need(model, "backbone", where)
    neck = _need(model, "neck", where)
    head = _need(model, "bbox_head", where)
    backbone = _backbone_from_mmcv(bb, f"{where}: backbone")
    if neck.get("type", "PAFPN") != "PAFPN":
        raise ConfigError(f"{where}: neck type {neck.get('type')!r} is not supported")
    if neck.get("add_extra_convs", "on_output") not in ("on_output", False, True):
        raise ConfigError(f"{where}: neck add_extra_convs {neck['add_extra_convs']!r}")
    neck_cfg = PAFPNConfig(
        in_channels=tuple(_need(neck, "in_channels", f"{where}: neck")),
        out_channels=int(_need(neck, "out_channels", f"{where}: neck")),
        start_level=int(neck.get("start_level", 0)),
        num_outs=int(_need(neck, "num_outs", f"{where}: neck")),
    )
    hw = f"{where}: bbox_head"
    if head.get("type", "SCRFDHead") != "SCRFDHead":
        raise ConfigError(f"{hw}: type {head.get('type')!r} is not supported")
    norm_cfg = head.get("norm_cfg")
    if norm_cfg is None:
        raise ConfigError(f"{hw}: a head without norm_cfg is not supported")
    ntype = str(norm_cfg.get("type", "")).upper()
    if ntype not in ("GN", "BN"):
        raise ConfigError(f"{hw}: norm_cfg type {norm_cfg.get('type')!r} (expected GN or BN)")
    anchors = head.get("anchor_generator", {})
    strides = tuple(int(s) for s in anchors.get("strides", (8, 16, 32)))
    n_anchors = len(anchors.get("ratios", [1.0])) * len(anchors.get("scales", [1, 2]))
    if not head.get("cls_reg_share", True):
        raise ConfigError(f"{hw}: cls_reg_share=False is not supported")
    head_kw: dict[str, Any] = dict(
        in_channels=int(_need(head, "in_channels", hw)),
        feat_channels=int(_need(head, "feat_channels", hw)),
        stacked_convs=int(head.get("stacked_convs", 4)),
        norm="gn" if ntype == "GN" else "bn",
        dw_conv=bool(head.get("dw_conv", False)),
        strides_share=bool(head.get("strides_share", True)),
        scale_mode=int(head.get("scale_mode", 1)),
        use_kps=bool(head.get("use_kps", False)),
        num_classes=int(head.get("num_classes", 1)),
        num_anchors=n_anchors,
        strides=strides,
        reg_max=int(head.get("reg_max", 8)),
    )
    if ntype == "GN":
        head_kw["num_groups"] = int(_need(norm_cfg, "num_groups", f"{hw}: norm_cfg"))
    return DetectorConfig(backbone, neck_cfg, SCRFDHeadConfig(**head_kw))


def _backbone_from_mmcv(bb: Mapping[str, Any], where: str) -> Any:
    btype = bb.get("type")
    if btype == "MasterNet":
        return MasterNetConfig(structure=str(_need(bb, "plainnet_struct", where)))
    if btype not in ("MobileNetV1", "ResNetV1e"):
        raise ConfigError(
            f"{where}: backbone type {btype!r} is not supported (MasterNet, MobileNetV1, ResNetV1e)"
        )
    block_cfg = _need(bb, "block_cfg", where)
    if btype == "MobileNetV1":
        return MobileNetV1Config(
            stage_planes=tuple(_need(block_cfg, "stage_planes", where)),
            stage_blocks=tuple(_need(block_cfg, "stage_blocks", where)),
        )
    if btype == "ResNetV1e":
        block = str(_need(block_cfg, "block", where))
        kinds = {"BasicBlock": "basic", "Bottleneck": "bottleneck"}
        if block not in kinds:
            raise ConfigError(f"{where}: block {block!r} (expected BasicBlock or Bottleneck)")
        return ResNetV1eConfig(
            block=kinds[block],  # type: ignore[arg-type]
            stage_blocks=tuple(_need(block_cfg, "stage_blocks", where)),
            stage_planes=tuple(_need(block_cfg, "stage_planes", where)),
            base_channels=int(bb.get("base_channels", 64)),
        )
    raise AssertionError(btype)  # unreachable


def _backbone_to_mmcv(b: Any) -> dict[str, Any]:
    if isinstance(b, MasterNetConfig):
        return {"type": "MasterNet", "plainnet_struct": b.structure}
    if isinstance(b, MobileNetV1Config):
        return {
            "type": "MobileNetV1",
            "block_cfg": {"stage_planes": list(b.stage_planes), "stage_blocks": b.stage_blocks},
        }
    if isinstance(b, ResNetV1eConfig):
        return {
            "type": "ResNetV1e",
            "depth": 0,
            "block_cfg": {
                "block": "BasicBlock" if b.block == "basic" else "Bottleneck",
                "stage_blocks": b.stage_blocks,
                "stage_planes": list(b.stage_planes),
            },
            "base_channels": b.base_channels,
            "num_stages": 4,
            "out_indices": (0, 1, 2, 3),
            "norm_cfg": {"type": "BN", "requires_grad": True},
            "norm_eval": False,
            "style": "pytorch",
        }
    raise ConfigError(f"cannot write an mmcv config for backbone {type(b).__name__}")


def mmcv_model_dict(cfg: DetectorConfig) -> dict[str, Any]:
    """The mmdet ``model`` dict (reference configs' layout) for a typed config."""
    h = cfg.head
    if h.num_anchors != 2:
        raise ConfigError(f"mmcv config: {h.num_anchors} anchors per location is not expressible")
    norm_cfg: dict[str, Any] = (
        {"type": "GN", "num_groups": h.num_groups, "requires_grad": True}
        if h.norm == "gn"
        else {"type": "BN", "requires_grad": True}
    )
    return {
        "type": "SCRFD",
        "backbone": _backbone_to_mmcv(cfg.backbone),
        "neck": {
            "type": "PAFPN",
            "in_channels": list(cfg.neck.in_channels),
            "out_channels": cfg.neck.out_channels,
            "start_level": cfg.neck.start_level,
            "add_extra_convs": "on_output",
            "num_outs": cfg.neck.num_outs,
        },
        "bbox_head": {
            "type": "SCRFDHead",
            "num_classes": h.num_classes,
            "in_channels": h.in_channels,
            "stacked_convs": h.stacked_convs,
            "feat_channels": h.feat_channels,
            "norm_cfg": norm_cfg,
            "cls_reg_share": True,
            "strides_share": h.strides_share,
            "dw_conv": h.dw_conv,
            "scale_mode": h.scale_mode,
            "anchor_generator": {
                "type": "AnchorGenerator",
                "ratios": [1.0],
                "scales": [1, 2],
                "base_sizes": [16, 64, 256][: len(h.strides)],
                "strides": list(h.strides),
            },
            "loss_cls": {
                "type": "QualityFocalLoss",
                "use_sigmoid": True,
                "beta": 2.0,
                "loss_weight": 1.0,
            },
            "loss_dfl": False,
            "reg_max": h.reg_max,
            "loss_bbox": {"type": "DIoULoss", "loss_weight": 2.0},
            "use_kps": h.use_kps,
            "loss_kps": {"type": "SmoothL1Loss", "beta": 1 / 9, "loss_weight": 0.1},
            "train_cfg": _TRAIN_CFG,
            "test_cfg": _TEST_CFG,
        },
    }


_TRAIN_CFG: dict[str, Any] = {
    "assigner": {"type": "ATSSAssigner", "topk": 9},
    "allowed_border": -1,
    "pos_weight": -1,
    "debug": False,
}
_TEST_CFG: dict[str, Any] = {
    "nms_pre": -1,
    "min_bbox_size": 0,
    "score_thr": WIDER_SCORE_THR,
    "nms": {"type": "nms", "iou_threshold": 0.45},
    "max_per_img": -1,
}


def _py(obj: Any, indent: int = 0) -> str:
    """Python source for plain data, with dicts spelled ``dict(...)`` as mmcv configs do."""
    pad = " " * (indent + 4)
    if isinstance(obj, dict):
        if not obj:
            return "dict()"
        if all(isinstance(k, str) and k.isidentifier() for k in obj):
            items = [f"{pad}{k}={_py(v, indent + 4)}" for k, v in obj.items()]
            return "dict(\n" + ",\n".join(items) + ")"
        items = [f"{pad}{k!r}: {_py(v, indent + 4)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "}"
    if isinstance(obj, list):
        return "[" + ", ".join(_py(v, indent) for v in obj) + "]"
    if isinstance(obj, tuple):
        inner = ", ".join(_py(v, indent) for v in obj)
        return f"({inner},)" if len(obj) == 1 else f"({inner})"
    if isinstance(obj, bool | int | str) or obj is None:
        return repr(obj)
    if isinstance(obj, float):
        return repr(float(obj))
    raise TypeError(f"cannot write {type(obj).__name__} into an mmcv config")


def mmcv_config_text(cfg: DetectorConfig, *, header: str | None = None) -> str:
    """An mmcv config file (``DamoFD_lms.py`` style) for ``cfg``: ``model``, ``train_cfg``,
    ``test_cfg`` and the test-time ``img_norm_cfg`` (RGB, mean 127.5, std 128)."""
    lines = [f"# {line}" for line in (header or "written by damofd").splitlines()]
    img_norm = {"mean": [127.5, 127.5, 127.5], "std": [128.0, 128.0, 128.0], "to_rgb": True}
    for name, value in (
        ("img_norm_cfg", img_norm),
        ("model", mmcv_model_dict(cfg)),
        ("train_cfg", _TRAIN_CFG),
        ("test_cfg", _TEST_CFG),
    ):
        lines.append(f"{name} = {_py(value)}")
    return "\n".join(lines) + "\n"
