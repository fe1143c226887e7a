"""Import the official SCRFD ONNX weights into damofd's PyTorch detectors.

The insightface SCRFD releases exist only as ONNX graphs (opset 11, PyTorch 1.6-1.9 exports) in
which every BatchNorm is folded into the preceding convolution, GroupNorm is spelled as
``Reshape → InstanceNormalization → Reshape → Mul(γ) → Add(β)``, the learnable per-level Scale is
a ``Mul`` by a scalar initializer, and duplicate initializers were merged by value (scrfd-spec
§8.1). This module reads such a graph, recognises which zoo configuration it holds (scrfd-spec
§8.2 rule 1: the sequence of ``(weight shape, group, stride)`` over the unique Conv nodes) and
copies the weights into a freshly built :class:`~damofd.models.SCRFD`:

* Conv nodes (topological order, de-duplicated by weight initializer, Identity aliases resolved)
  are paired one-to-one with the model's ``nn.Conv2d`` modules in first-execution order, recorded
  with forward hooks on a small dummy input. Every pair must agree on weight shape, group, stride,
  pads, dilation and bias presence (the ONNX conv carries a bias exactly when the module has a
  bias or feeds a BatchNorm). State-dict-like initializer names
  (``backbone.* / neck.* / bbox_head.*``) must equal the module path; the only tolerated
  exception is the merged bias of the summed PAFPN conv pairs ``fpn_convs.{1,2}`` /
  ``downsample_convs.{0,1}``.
* In the *canonical* form (default) every BatchNorm stays, as an identity carrying the folded
  bias: ``weight = 1``, ``running_mean = 0``, ``running_var = 1 − eps``, ``bias = b'``. The model
  therefore keeps the mmdet module tree and still loads ``.pth`` checkpoints strictly. The
  *fused* form calls ``model.fuse()`` afterwards.
* GroupNorm γ/β come from the Mul/Add initializers; the InstanceNormalization scale must be ones,
  its bias zeros and ε = 1e-5. Scales come from the scalar Mul initializers (3 or 0 of them).
* The number of values consumed must equal the model's BN-fused parameter count (scrfd-spec §7.1),
  so nothing is left over on either side.

An imported model is an inference function, not a checkpoint: the BN statistics and affines are
gone (scrfd-spec §8.4). Keep BN frozen (eval) when fine-tuning from it.

Entry points: :func:`import_scrfd_onnx`, :func:`detect_onnx_config`, :func:`read_scrfd_onnx`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import nn

from damofd.errors import ConfigError, InputError
from damofd.models.onnx_graph import (
    ConvKey,
    OnnxConv,
    OnnxGroupNorm,
    OnnxScale,
    ScrfdOnnxGraph,
    read_scrfd_onnx,
)

if TYPE_CHECKING:
    from damofd.models.configs import DetectorConfig

__all__ = [
    "ConvKey",
    "OnnxConv",
    "OnnxGroupNorm",
    "OnnxScale",
    "ScrfdOnnxGraph",
    "detect_onnx_config",
    "import_scrfd_onnx",
    "model_fingerprint",
    "read_scrfd_onnx",
]

_STATE_PREFIXES = ("backbone.", "neck.", "bbox_head.")
# PAFPN conv pairs whose outputs are summed; ONNX optimisers merge their (identical) biases under
# either name (scrfd-spec §8.1), so these and only these may use each other's bias initializer.
_MERGED_BIAS_PAIRS = (
    ("neck.fpn_convs.1.conv", "neck.downsample_convs.0.conv"),
    ("neck.fpn_convs.2.conv", "neck.downsample_convs.1.conv"),
)
_TRACE_SIZE = 64  # dummy input side (pixels) for recording the execution order


# --------------------------------------------------------------------------------------------
# The torch side: execution order of the model's modules
# --------------------------------------------------------------------------------------------


@dataclass
class _ModelTrace:
    """First-execution order of a model's convs, norms and Scales on a dummy input."""

    convs: list[tuple[str, nn.Conv2d]]
    bn_after: dict[str, tuple[str, nn.modules.batchnorm._BatchNorm]]  # conv path -> its BN
    group_norms: list[tuple[str, nn.GroupNorm]]
    scales: list[tuple[str, nn.Module]]
    batch_norms: list[tuple[str, nn.modules.batchnorm._BatchNorm]]

    @property
    def fingerprint(self) -> tuple[ConvKey, ...]:
        return tuple(_module_key(m) for _, m in self.convs)

    def fused_param_count(self, model: nn.Module) -> int:
        """Parameters after folding every BN into its conv (scrfd-spec §7.1): all non-BN
        parameters, plus one bias per BN whose conv has no bias of its own."""
        bn_ids = {id(m) for _, m in self.batch_norms}
        n = sum(
            p.numel()
            for mod in model.modules()
            if id(mod) not in bn_ids
            for p in mod.parameters(recurse=False)
        )
        convs = dict(self.convs)
        for path, (_, bn) in self.bn_after.items():
            if convs[path].bias is None:
                n += bn.num_features
        return n


def _module_key(m: nn.Conv2d) -> ConvKey:
    return (tuple(int(s) for s in m.weight.shape), int(m.groups), tuple(int(s) for s in m.stride))


def _scale_param(m: nn.Module) -> nn.Parameter | None:
    p = m._parameters.get("scale")
    return p if p is not None and p.numel() == 1 else None


def _trace_model(model: nn.Module, size: int = _TRACE_SIZE) -> _ModelTrace:
    """Run ``model`` (switched to eval mode) on a ``1×3×size×size`` zero input with forward hooks
    and record, once per module, the order in which convs, norms and Scales first execute, and
    which BatchNorm consumes each conv's output directly."""
    model.eval()
    convs: list[tuple[str, nn.Conv2d]] = []
    gns: list[tuple[str, nn.GroupNorm]] = []
    bns: list[tuple[str, nn.modules.batchnorm._BatchNorm]] = []
    scales: list[tuple[str, nn.Module]] = []
    bn_after: dict[str, tuple[str, nn.modules.batchnorm._BatchNorm]] = {}
    produced: dict[int, str] = {}
    keep: list[torch.Tensor] = []  # keeps outputs alive so that their ids stay unique
    seen: set[int] = set()
    handles = []

    def hook(path: str, mod: nn.Module):
        def fn(m: nn.Module, args: tuple, out: object) -> None:
            if isinstance(m, nn.Conv2d):
                if isinstance(out, torch.Tensor):
                    produced.setdefault(id(out), path)
                    keep.append(out)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm) and args:
                src = produced.get(id(args[0]))
                if src is not None and src not in bn_after and id(m) not in seen:
                    bn_after[src] = (path, m)
            if id(m) in seen:
                return
            seen.add(id(m))
            if isinstance(m, nn.Conv2d):
                convs.append((path, m))
            elif isinstance(m, nn.GroupNorm):
                gns.append((path, m))
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                bns.append((path, m))
            else:
                scales.append((path, m))

        return fn

    for path, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d | nn.GroupNorm | nn.modules.batchnorm._BatchNorm) or (
            _scale_param(mod) is not None
        ):
            handles.append(mod.register_forward_hook(hook(path, mod)))
    try:
        p = next(model.parameters(), None)
        x = torch.zeros(
            1,
            3,
            size,
            size,
            dtype=p.dtype if p is not None else torch.float32,
            device=p.device if p is not None else "cpu",
        )
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    all_convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if len(all_convs) != len(convs):
        unused = sorted(set(all_convs) - {n for n, _ in convs})
        raise ConfigError(f"model has convs that never run on a dummy input: {unused[:5]}")
    return _ModelTrace(convs, bn_after, gns, scales, bns)


def model_fingerprint(model: nn.Module) -> tuple[ConvKey, ...]:
    """``(weight shape, group, stride)`` of every ``nn.Conv2d`` in first-execution order — the
    torch counterpart of :attr:`ScrfdOnnxGraph.fingerprint`."""
    was_training = model.training
    try:
        return _trace_model(model).fingerprint
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------------------------
# Config detection
# --------------------------------------------------------------------------------------------


def _zoo_names() -> list[str]:
    from damofd.models.zoo import list_models

    return list(list_models())


def _build(config: str | DetectorConfig) -> nn.Module:
    """A zoo (or explicitly configured) model without the training init: every weight is
    overwritten by the import."""
    if isinstance(config, str):
        from damofd.models.factory import create_model

        return create_model(config, init=False)
    from damofd.models.detector import SCRFD

    return SCRFD(config, init=False)


def _conv_multiset(model: nn.Module) -> Counter[ConvKey]:
    return Counter(_module_key(m) for m in model.modules() if isinstance(m, nn.Conv2d))


@lru_cache(maxsize=64)
def _zoo_conv_multiset(name: str) -> tuple[tuple[ConvKey, int], ...]:
    """Conv keys of a zoo config with multiplicities (cached: zoo configs are immutable)."""
    return tuple(sorted(_conv_multiset(_build(name)).items()))


def _cue_compatible(graph: ScrfdOnnxGraph, name: str) -> bool:
    """Cheap filter on the typed config before building anything (scrfd-spec §8.2 quick cues)."""
    from damofd.models.zoo import get_config

    head = get_config(name).head
    return (
        head.use_kps == graph.has_kps
        and (head.norm == "gn") == bool(graph.group_norms)
        and bool(head.use_scale) == bool(graph.scales)
        and bool(head.strides_share) == bool(graph.cues()["shared_head"])
    )


def _first_mismatch(a: Sequence[ConvKey], b: Sequence[ConvKey]) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"conv {i}: ONNX {_fmt_key(x)} vs model {_fmt_key(y)}"
    return f"{len(a)} ONNX convs vs {len(b)} model convs"


def _fmt_key(k: ConvKey) -> str:
    shape, group, stride = k
    return f"weight {tuple(shape)} group {group} stride {tuple(stride)}"


def _find_config(
    graph: ScrfdOnnxGraph, names: Iterable[str]
) -> list[tuple[str, nn.Module, _ModelTrace]]:
    """Zoo configs whose conv fingerprint equals the graph's (built and traced).

    Candidates are filtered by the quick cues, then by the multiset of conv keys (no forward
    pass needed); only the survivors run the ordered trace.
    """
    fp = graph.fingerprint
    want = Counter(fp)
    found = []
    for name in names:
        if not _cue_compatible(graph, name):
            continue
        if Counter(dict(_zoo_conv_multiset(name))) != want:
            continue
        model = _build(name)
        trace = _trace_model(model)
        if trace.fingerprint == fp:
            found.append((name, model, trace))
    return found


def _no_match_message(graph: ScrfdOnnxGraph, names: Sequence[str]) -> str:
    cands = [n for n in names if _cue_compatible(graph, n)]
    want = Counter(graph.fingerprint)
    best, note = -1, ""
    for n in cands:
        have = Counter(dict(_zoo_conv_multiset(n)))
        common = sum((want & have).values())
        if common > best:
            extra = sum((have - want).values())
            missing = sum((want - have).values())
            best, note = (
                common,
                (
                    f"closest: {n} ({missing} graph convs without a counterpart, {extra} model "
                    "convs without one)"
                ),
            )
    tried = ", ".join(cands) if cands else "none passed the quick cues"
    return (
        f"{graph.path}: matches no damofd zoo config ({graph.summary()}); candidates "
        f"checked: {tried}" + (f"; {note}" if note else "")
    )


def detect_onnx_config(path: str | Path | ScrfdOnnxGraph) -> str:
    """The zoo name (e.g. ``"scrfd-500m-kps"``) of the detector an ONNX file holds.

    The sequence of ``(weight shape, group, stride)`` over the graph's unique convs must equal
    exactly one zoo config's (scrfd-spec §8.2 rule 1); kps outputs, GroupNorm, Scale and shared
    head cues pre-filter the candidates. Raises :class:`~damofd.errors.ConfigError` with the
    graph summary when no config (or more than one) matches — a file is never loaded into the
    wrong architecture.
    """
    graph = path if isinstance(path, ScrfdOnnxGraph) else read_scrfd_onnx(path)
    return _detect(graph)[0]


def _detect(graph: ScrfdOnnxGraph) -> tuple[str, nn.Module, _ModelTrace]:
    names = _zoo_names()
    found = _find_config(graph, names)
    if len(found) == 1:
        return found[0]
    if not found:
        raise ConfigError(_no_match_message(graph, names))
    raise ConfigError(
        f"{graph.path}: ambiguous, matches {[f[0] for f in found]} ({graph.summary()}); "
        "pass config= explicitly"
    )


# --------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------


def _is_state_name(name: str) -> bool:
    return name.startswith(_STATE_PREFIXES)


def _merged_partner(path: str) -> str | None:
    for a, b in _MERGED_BIAS_PAIRS:
        if path == a:
            return b
        if path == b:
            return a
    return None


def _check_name(where: str, name: str | None, expected: str, allowed: Sequence[str] = ()) -> None:
    if name is None or not _is_state_name(name):
        return  # numeric / anonymous initializer: nothing to check
    if name != expected and name not in allowed:
        raise InputError(
            f"{where}: initializer {name!r} is paired with {expected!r}; the graph order does "
            "not match the model (re-sorted or edited graph?)"
        )


class _PendingWeights:
    """Values to copy into the model, collected first and assigned once every check has passed."""

    def __init__(self, constants: dict[str, np.ndarray]) -> None:
        self.constants = constants
        self.consumed = 0  # number of ONNX weight values taken so far
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def put(self, t: torch.Tensor, value: np.ndarray | float) -> None:
        self.pending.append((t, torch.tensor(np.asarray(value, dtype=np.float32)).reshape(t.shape)))

    def assign(self) -> None:
        with torch.no_grad():
            for t, v in self.pending:
                t.copy_(v.to(dtype=t.dtype, device=t.device))


def import_scrfd_onnx(
    path: str | Path,
    *,
    config: str | DetectorConfig | None = None,
    form: Literal["canonical", "fused"] = "canonical",
) -> nn.Module:
    """Build the zoo model an official SCRFD ONNX file holds and copy its weights in.

    Args:
        path: an ONNX file exported by SCRFD's ``scrfd2onnx.py`` (BN folded, opset 11) or by
            :func:`damofd.export_onnx` from a damofd model in eval mode.
        config: the zoo name to build, or a :class:`~damofd.models.DetectorConfig` (e.g. a
            searched DamoFD backbone exported with damofd); detected with
            :func:`detect_onnx_config` when ``None``, verified against the graph's conv
            fingerprint otherwise.
        form: ``"canonical"`` keeps the mmdet module tree (every BN becomes an identity that
            carries the folded bias: weight 1, running_mean 0, running_var 1 − eps);
            ``"fused"`` then calls ``model.fuse()`` (BN folded into conv biases).

    Returns:
        The :class:`~damofd.models.SCRFD` in eval mode; its ``forward_export`` reproduces the
        ONNX outputs (scores, ltrb box distances and keypoint offsets in stride units) to float32
        rounding. BN statistics are not recoverable: freeze BN to fine-tune from it.

    Raises:
        InputError: unreadable file, malformed graph, or a pairing/name/count check failed.
        ConfigError: the file matches no zoo config, or not the given one.
    """
    if form not in ("canonical", "fused"):
        raise ConfigError(f"form must be 'canonical' or 'fused', got {form!r}")
    graph = read_scrfd_onnx(path)
    where = str(graph.path)
    model, trace, label = _model_for_graph(graph, config)
    weights = _PendingWeights(graph.constants)
    _take_convs(graph, trace, label, weights)
    _take_group_norms(graph, trace, label, weights)
    _take_scales(graph, trace, label, weights)
    # ---- count check (scrfd-spec §8.2 rule 7)
    expected = trace.fused_param_count(model)
    if weights.consumed != expected:
        raise InputError(
            f"{where}: consumed {weights.consumed} weight values but {label} has {expected} "
            "BN-fused parameters"
        )
    weights.assign()
    model.eval()
    if form == "fused":
        fused = model.fuse()
        if isinstance(fused, nn.Module):
            model = fused
        model.eval()
    return model


def _model_for_graph(
    graph: ScrfdOnnxGraph, config: str | DetectorConfig | None
) -> tuple[nn.Module, _ModelTrace, str]:
    """Build (or detect) the model for ``graph``; returns it, its trace and a label for errors."""
    where = str(graph.path)
    if config is None:
        config, model, trace = _detect(graph)
        label = repr(config)
    else:
        model = _build(config)
        trace = _trace_model(model)
        label = repr(config) if isinstance(config, str) else "the given DetectorConfig"
        fp, mfp = graph.fingerprint, trace.fingerprint
        if fp != mfp:
            raise ConfigError(
                f"{where}: is not a {label} graph ({graph.summary()}); first difference at "
                f"{_first_mismatch(fp, mfp)}"
            )
    if graph.has_kps != bool(model.use_kps):
        raise ConfigError(
            f"{where}: {graph.num_outputs} outputs but {label} has use_kps={model.use_kps}"
        )
    if graph.num_outputs not in (6, 9):
        raise InputError(f"{where}: expected 6 or 9 outputs, found {graph.num_outputs}")
    return model, trace, label


def _take_convs(
    graph: ScrfdOnnxGraph, trace: _ModelTrace, label: str, weights: _PendingWeights
) -> None:
    """Pair the ONNX convs with the model's, check them and queue weights (+ the BN each feeds)."""
    where = str(graph.path)
    bn_paired = set()
    for (mpath, conv), oc in zip(trace.convs, graph.convs):
        loc = f"{where}: conv {oc.node!r} ↔ {mpath}"
        bn = trace.bn_after.get(mpath)
        _check_conv_pair(loc, mpath, conv, oc, bn)
        w = weights.constants[oc.weight]
        weights.put(conv.weight, w)
        weights.consumed += w.size
        if oc.bias is None:
            continue
        b = weights.constants[oc.bias].reshape(-1)
        if b.size != oc.weight_shape[0]:
            raise InputError(f"{loc}: bias has {b.size} values for {oc.weight_shape[0]} channels")
        weights.consumed += b.size
        if bn is None:
            weights.put(conv.bias, b)  # type: ignore[arg-type]
            continue
        bpath, bnm = bn
        bn_paired.add(bpath)
        if conv.bias is not None:
            weights.put(conv.bias, np.zeros_like(b))
        if bnm.weight is None or bnm.bias is None or bnm.running_var is None:
            raise InputError(f"{loc}: BatchNorm {bpath} is not affine with running stats")
        weights.put(bnm.weight, np.ones_like(b))
        weights.put(bnm.bias, b)
        weights.put(bnm.running_mean, np.zeros_like(b))  # type: ignore[arg-type]
        weights.put(bnm.running_var, np.full_like(b, 1.0 - bnm.eps))  # type: ignore[arg-type]
    unpaired = [p for p, _ in trace.batch_norms if p not in bn_paired]
    if unpaired:
        raise ConfigError(f"{label}: BatchNorms not fed directly by a conv: {unpaired[:5]}")


def _check_conv_pair(
    loc: str,
    mpath: str,
    conv: nn.Conv2d,
    oc: OnnxConv,
    bn: tuple[str, nn.modules.batchnorm._BatchNorm] | None,
) -> None:
    """Check one ONNX conv against its module: geometry, bias presence and initializer names."""
    pads = _module_pads(conv, loc)
    checks = [
        ("weight shape", oc.weight_shape, tuple(conv.weight.shape)),
        ("group", oc.group, conv.groups),
        ("stride", oc.strides, tuple(conv.stride)),
        ("pads", oc.pads, pads),
        ("dilation", oc.dilations, tuple(conv.dilation)),
    ]
    for what, got, want in checks:
        if got != want:
            raise InputError(f"{loc}: {what} {got} != {want}")
    expects_bias = conv.bias is not None or bn is not None
    if (oc.bias is not None) != expects_bias:
        raise InputError(
            f"{loc}: ONNX conv {'has' if oc.bias is not None else 'lacks'} a bias but the "
            f"module {'has' if expects_bias else 'has no'} bias or following BatchNorm"
        )
    _check_name(loc, oc.weight, f"{mpath}.weight")
    partner = _merged_partner(mpath)
    _check_name(loc, oc.bias, f"{mpath}.bias", (f"{partner}.bias",) if partner else ())


def _take_group_norms(
    graph: ScrfdOnnxGraph, trace: _ModelTrace, label: str, weights: _PendingWeights
) -> None:
    """Pair the GroupNorm patterns with the model's GroupNorms and queue γ/β."""
    where = str(graph.path)
    if len(trace.group_norms) != len(graph.group_norms):
        raise InputError(
            f"{where}: {len(graph.group_norms)} GroupNorm patterns in the graph, "
            f"{len(trace.group_norms)} GroupNorm modules in {label}"
        )
    for (gpath, gn), og in zip(trace.group_norms, graph.group_norms):
        loc = f"{where}: GroupNorm at {og.node!r} ↔ {gpath}"
        if (og.num_groups, og.channels) != (gn.num_groups, gn.num_channels):
            raise InputError(
                f"{loc}: GN({og.num_groups}, {og.channels}) != GN({gn.num_groups}, "
                f"{gn.num_channels})"
            )
        if not np.isclose(og.eps, gn.eps, rtol=1e-4, atol=0):
            raise InputError(f"{loc}: eps {og.eps:g} != {gn.eps:g}")
        if gn.weight is None or gn.bias is None:
            raise InputError(f"{loc}: module GroupNorm is not affine")
        _check_name(loc, og.gamma, f"{gpath}.weight")
        _check_name(loc, og.beta, f"{gpath}.bias")
        weights.put(gn.weight, weights.constants[og.gamma].reshape(-1))
        weights.put(gn.bias, weights.constants[og.beta].reshape(-1))
        weights.consumed += 2 * og.channels


def _take_scales(
    graph: ScrfdOnnxGraph, trace: _ModelTrace, label: str, weights: _PendingWeights
) -> None:
    """Pair the Scale Muls with the model's Scale modules and queue their values."""
    where = str(graph.path)
    if len(trace.scales) != len(graph.scales) or len(graph.scales) not in (0, 3):
        raise InputError(
            f"{where}: {len(graph.scales)} Scale Muls in the graph, {len(trace.scales)} Scale "
            f"modules in {label} (expected 3 or 0 on both sides)"
        )
    for (spath, smod), osc in zip(trace.scales, graph.scales):
        loc = f"{where}: Scale {osc.name!r} ↔ {spath}"
        _check_name(loc, osc.name, f"{spath}.scale")
        weights.put(_scale_param(smod), osc.value)  # type: ignore[arg-type]
        weights.consumed += 1


def _module_pads(conv: nn.Conv2d, loc: str) -> tuple[int, ...]:
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        raise InputError(f"{loc}: module padding {conv.padding!r}/{conv.padding_mode} unsupported")
    ph, pw = (int(p) for p in conv.padding)
    return (ph, pw, ph, pw)
