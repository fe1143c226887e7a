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
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import nn

from damofd.errors import ConfigError, InputError

if TYPE_CHECKING:
    import onnx

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

#: ``(weight shape, group, stride)`` of one convolution; the unit of the config fingerprint.
ConvKey = tuple[tuple[int, ...], int, tuple[int, ...]]

_STATE_PREFIXES = ("backbone.", "neck.", "bbox_head.")
# PAFPN conv pairs whose outputs are summed; ONNX optimisers merge their (identical) biases under
# either name (scrfd-spec §8.1), so these and only these may use each other's bias initializer.
_MERGED_BIAS_PAIRS = (
    ("neck.fpn_convs.1.conv", "neck.downsample_convs.0.conv"),
    ("neck.fpn_convs.2.conv", "neck.downsample_convs.1.conv"),
)
_GN_EPS = 1e-5
_TRACE_SIZE = 64  # dummy input side (pixels) for recording the execution order


# --------------------------------------------------------------------------------------------
# Reading the graph
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OnnxConv:
    """One unique Conv node (the first node that uses its weight initializer)."""

    node: str
    weight: str
    bias: str | None
    weight_shape: tuple[int, ...]
    group: int
    strides: tuple[int, ...]
    pads: tuple[int, ...]
    dilations: tuple[int, ...]
    uses: int  # number of Conv nodes sharing this weight (3 for a shared head)

    @property
    def key(self) -> ConvKey:
        """The fingerprint entry ``(weight shape, group, stride)``."""
        return (self.weight_shape, self.group, self.strides)


@dataclass(frozen=True)
class OnnxGroupNorm:
    """One unique GroupNorm pattern (de-duplicated by its γ initializer)."""

    node: str  # the InstanceNormalization node
    gamma: str
    beta: str
    num_groups: int
    channels: int
    eps: float
    uses: int


@dataclass(frozen=True)
class OnnxScale:
    """One learnable Scale: ``Mul(conv_output, scalar initializer)``."""

    node: str
    name: str
    value: float
    uses: int


@dataclass(frozen=True)
class ScrfdOnnxGraph:
    """What :func:`read_scrfd_onnx` found in an SCRFD ONNX file.

    ``convs``/``group_norms``/``scales`` are in topological order and de-duplicated by
    initializer. ``constants`` maps initializer (and Constant-node) names to arrays.
    """

    path: Path
    opset: int
    producer: str
    input_name: str
    output_names: tuple[str, ...]
    output_ranks: tuple[int | None, ...]
    convs: tuple[OnnxConv, ...]
    group_norms: tuple[OnnxGroupNorm, ...]
    scales: tuple[OnnxScale, ...]
    op_counts: dict[str, int]
    constants: dict[str, np.ndarray] = field(repr=False)

    @property
    def num_outputs(self) -> int:
        return len(self.output_names)

    @property
    def has_kps(self) -> bool:
        """9 outputs (score, bbox, kps × 3 levels) rather than 6."""
        return self.num_outputs == 9

    @property
    def batched(self) -> bool:
        """Outputs are ``(B, N, C)`` (newer head code) rather than ``(N, C)`` (batch 1 only)."""
        return all(r == 3 for r in self.output_ranks)

    @property
    def fingerprint(self) -> tuple[ConvKey, ...]:
        """``(weight shape, group, stride)`` over the unique convs, in graph order."""
        return tuple(c.key for c in self.convs)

    @property
    def num_weight_values(self) -> int:
        """Float values the model-defining initializers hold (unique conv weights and biases —
        a merged bias counted once per conv that uses it —, GroupNorm γ/β, Scales)."""
        n = 0
        for c in self.convs:
            n += int(np.prod(c.weight_shape))
            if c.bias is not None:
                n += c.weight_shape[0]
        n += sum(2 * g.channels for g in self.group_norms)
        return n + len(self.scales)

    def cues(self) -> dict[str, object]:
        """Quick structural cues (scrfd-spec §8.2 rule 1), for messages and summaries."""
        ops = self.op_counts
        return {
            "convs": len(self.convs),
            "outputs": self.num_outputs,
            "kps": self.has_kps,
            "gn_head": ops.get("InstanceNormalization", 0) > 0,
            "shared_head": any(c.uses == 3 for c in self.convs),
            "resnet_v1e": ops.get("MaxPool", 0) > 0 and ops.get("AveragePool", 0) > 0,
            "grouped_convs": sum(c.group > 1 for c in self.convs),
            "scales": len(self.scales),
            "batched": self.batched,
        }

    def summary(self) -> str:
        """One line describing the graph: conv count, outputs and the cues found."""
        c = self.cues()
        parts = [
            f"{c['convs']} unique convs",
            f"{c['outputs']} outputs ({'with' if c['kps'] else 'no'} kps, "
            f"{'batched (B, N, C)' if c['batched'] else '(N, C)'})",
            f"{'GroupNorm' if c['gn_head'] else 'no GroupNorm (BN folded)'} head",
            "shared head" if c["shared_head"] else "per-stride head",
            f"{c['scales']} Scale Muls",
            f"{c['grouped_convs']} grouped convs",
        ]
        if c["resnet_v1e"]:
            parts.append("MaxPool + AveragePool (ResNetV1e)")
        return ", ".join(parts)


class _Graph:
    """Name resolution helpers over an ``onnx.GraphProto``."""

    def __init__(self, graph: onnx.GraphProto, where: str) -> None:
        from onnx import numpy_helper

        self.where = where
        self.constants: dict[str, np.ndarray] = {
            t.name: numpy_helper.to_array(t) for t in graph.initializer
        }
        self.alias: dict[str, str] = {}
        nodes = _topological(list(graph.node), {i.name for i in graph.input}, self.constants)
        kept = []
        for n in nodes:
            if n.op_type == "Identity":
                self.alias[n.output[0]] = n.input[0]
            elif n.op_type == "Constant" and len(n.output) == 1:
                value = _constant_value(n)
                if value is not None:
                    self.constants[n.output[0]] = value
            else:
                kept.append(n)
        self.nodes = kept
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in kept:
            for o in n.output:
                self.producer[o] = n
            for i in n.input:
                if i:
                    self.consumers.setdefault(self.resolve(i), []).append(n)

    def resolve(self, name: str) -> str:
        seen = 0
        while name in self.alias:
            name = self.alias[name]
            seen += 1
            if seen > 10_000:
                raise InputError(f"{self.where}: cyclic Identity chain at {name!r}")
        return name

    def const(self, name: str) -> np.ndarray | None:
        return self.constants.get(self.resolve(name))

    def inputs(self, node: onnx.NodeProto) -> list[str]:
        return [self.resolve(i) if i else "" for i in node.input]

    def only_consumer(self, tensor: str, op_type: str) -> onnx.NodeProto | None:
        cons = self.consumers.get(self.resolve(tensor), [])
        if len(cons) == 1 and cons[0].op_type == op_type:
            return cons[0]
        return None


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    from onnx import helper, numpy_helper

    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if a.name == "value":
            return numpy_helper.to_array(v)
        if a.name == "value_float":
            return np.array(v, dtype=np.float32)
        if a.name == "value_floats":
            return np.array(v, dtype=np.float32)
        if a.name == "value_int":
            return np.array(v, dtype=np.int64)
        if a.name == "value_ints":
            return np.array(v, dtype=np.int64)
    return None


def _topological(
    nodes: list[onnx.NodeProto], graph_inputs: set[str], constants: dict[str, np.ndarray]
) -> list[onnx.NodeProto]:
    """The nodes in topological order; the stored order wherever it already is one (the ONNX
    standard requires it, and it is the exporter's trace order that the pairing relies on)."""
    available = set(graph_inputs) | set(constants) | {""}
    ok = True
    for n in nodes:
        if any(i not in available for i in n.input):
            ok = False
            break
        available.update(n.output)
    if ok:
        return nodes
    # stable Kahn sort: always emit the earliest ready node
    import heapq

    produced_by = {o: k for k, n in enumerate(nodes) for o in n.output}
    deps = [
        {produced_by[i] for i in n.input if i in produced_by and produced_by[i] != k}
        for k, n in enumerate(nodes)
    ]
    users: dict[int, list[int]] = {}
    for k, d in enumerate(deps):
        for j in d:
            users.setdefault(j, []).append(k)
    missing = [len(d) for d in deps]
    ready = [k for k, m in enumerate(missing) if m == 0]
    heapq.heapify(ready)
    out = []
    while ready:
        k = heapq.heappop(ready)
        out.append(nodes[k])
        for u in users.get(k, []):
            missing[u] -= 1
            if missing[u] == 0:
                heapq.heappush(ready, u)
    if len(out) != len(nodes):
        raise InputError("ONNX graph has a cycle or inputs that no node produces")
    return out


def _attr(node: onnx.NodeProto, name: str, default: object) -> object:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _node_label(node: onnx.NodeProto) -> str:
    return node.name or (node.output[0] if node.output else node.op_type)


def _load_onnx(path: str | Path) -> tuple[Path, onnx.ModelProto]:
    import onnx

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: ONNX file not found")
    try:
        model = onnx.load(str(p))
    except Exception as exc:  # onnx raises DecodeError and friends
        raise InputError(f"{p}: not a readable ONNX model ({exc})") from exc
    return p, model


def read_scrfd_onnx(path: str | Path) -> ScrfdOnnxGraph:
    """Parse an SCRFD ONNX file into unique convs, GroupNorm patterns, Scales and outputs.

    Raises :class:`~damofd.errors.InputError` when the file is unreadable, a conv weight is not a
    constant, BatchNorm was not folded (an export from a train-mode model) or a GroupNorm pattern
    is malformed.
    """
    p, model = _load_onnx(path)
    where = str(p)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    g = _Graph(model.graph, where)
    op_counts = dict(Counter(n.op_type for n in g.nodes))
    if op_counts.get("BatchNormalization"):
        raise InputError(
            f"{where}: the graph has {op_counts['BatchNormalization']} BatchNormalization nodes; "
            "official SCRFD exports fold every BN into its conv. Re-export the model in eval mode "
            "with constant folding (a model wrapped in a train-mode module is exported in train "
            "mode, scrfd-spec §8.4)"
        )
    initializer_names = {t.name for t in model.graph.initializer}

    # ---- convs, de-duplicated by weight initializer
    conv_nodes: dict[str, list[onnx.NodeProto]] = {}
    order: list[str] = []
    for n in g.nodes:
        if n.op_type != "Conv":
            continue
        ins = g.inputs(n)
        if len(ins) < 2 or g.const(ins[1]) is None:
            raise InputError(f"{where}: Conv node {_node_label(n)!r} has no constant weight")
        if ins[1] not in conv_nodes:
            conv_nodes[ins[1]] = []
            order.append(ins[1])
        conv_nodes[ins[1]].append(n)
    convs = []
    for wname in order:
        first = conv_nodes[wname][0]
        ins = g.inputs(first)
        w = g.constants[wname]
        bias = ins[2] if len(ins) > 2 and ins[2] else None
        if bias is not None and g.const(bias) is None:
            raise InputError(f"{where}: Conv node {_node_label(first)!r} has a non-constant bias")
        for other in conv_nodes[wname][1:]:
            if g.inputs(other)[2:3] != ins[2:3]:
                raise InputError(
                    f"{where}: Conv nodes sharing weight {wname!r} use different biases"
                )
        nd = w.ndim - 2
        convs.append(
            OnnxConv(
                node=_node_label(first),
                weight=wname,
                bias=bias,
                weight_shape=tuple(int(s) for s in w.shape),
                group=int(_attr(first, "group", 1)),  # type: ignore[call-overload]
                strides=tuple(int(s) for s in _attr(first, "strides", [1] * nd)),  # type: ignore[attr-defined]
                pads=tuple(int(s) for s in _attr(first, "pads", [0] * (2 * nd))),  # type: ignore[attr-defined]
                dilations=tuple(int(s) for s in _attr(first, "dilations", [1] * nd)),  # type: ignore[attr-defined]
                uses=len(conv_nodes[wname]),
            )
        )
        if _attr(first, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise InputError(f"{where}: Conv node {_node_label(first)!r} uses auto_pad")

    # ---- GroupNorm patterns
    gn_by_gamma: dict[str, OnnxGroupNorm] = {}
    gn_uses: Counter[str] = Counter()
    gn_nodes: set[int] = set()  # ids of Mul nodes that belong to GN patterns
    for n in g.nodes:
        if n.op_type != "InstanceNormalization":
            continue
        gn = _parse_group_norm(g, n, where, gn_nodes)
        gn_uses[gn.gamma] += 1
        prev = gn_by_gamma.get(gn.gamma)
        if prev is None:
            gn_by_gamma[gn.gamma] = gn
        elif (prev.beta, prev.num_groups, prev.channels) != (gn.beta, gn.num_groups, gn.channels):
            raise InputError(f"{where}: GroupNorms sharing γ {gn.gamma!r} differ")
    group_norms = tuple(
        OnnxGroupNorm(
            node=v.node,
            gamma=v.gamma,
            beta=v.beta,
            num_groups=v.num_groups,
            channels=v.channels,
            eps=v.eps,
            uses=gn_uses[k],
        )
        for k, v in gn_by_gamma.items()
    )

    # ---- Scale Muls: Mul(conv output, scalar float initializer)
    scale_first: dict[str, OnnxScale] = {}
    scale_uses: Counter[str] = Counter()
    for n in g.nodes:
        if n.op_type != "Mul" or id(n) in gn_nodes:
            continue
        ins = g.inputs(n)
        if len(ins) != 2:
            continue
        for k in (0, 1):
            c, other = ins[k], ins[1 - k]
            v = g.const(c)
            prod = g.producer.get(other)
            if (
                v is not None
                and c in initializer_names
                and v.size == 1
                and v.ndim <= 1
                and np.issubdtype(v.dtype, np.floating)
                and prod is not None
                and prod.op_type == "Conv"
            ):
                scale_uses[c] += 1
                scale_first.setdefault(
                    c, OnnxScale(node=_node_label(n), name=c, value=float(v.reshape(())), uses=0)
                )
    scales = tuple(
        OnnxScale(node=s.node, name=s.name, value=s.value, uses=scale_uses[s.name])
        for s in scale_first.values()
    )

    ranks = []
    for o in model.graph.output:
        t = o.type.tensor_type
        ranks.append(len(t.shape.dim) if t.HasField("shape") else None)
    graph_inputs = [i.name for i in model.graph.input if i.name not in initializer_names]
    if len(graph_inputs) != 1:
        raise InputError(f"{where}: expected one image input, found {graph_inputs}")
    return ScrfdOnnxGraph(
        path=p,
        opset=int(opset),
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        input_name=graph_inputs[0],
        output_names=tuple(o.name for o in model.graph.output),
        output_ranks=tuple(ranks),
        convs=tuple(convs),
        group_norms=group_norms,
        scales=scales,
        op_counts=op_counts,
        constants=g.constants,
    )


def _mul_add_const(g: _Graph, node: onnx.NodeProto) -> tuple[str, str] | None:
    """For a binary Mul/Add node with exactly one constant input: (constant name, other)."""
    ins = g.inputs(node)
    if len(ins) != 2:
        return None
    c0, c1 = g.const(ins[0]) is not None, g.const(ins[1]) is not None
    if c0 == c1:
        return None
    return (ins[0], ins[1]) if c0 else (ins[1], ins[0])


def _parse_group_norm(
    g: _Graph, inorm: onnx.NodeProto, where: str, gn_nodes: set[int]
) -> OnnxGroupNorm:
    label = _node_label(inorm)

    def bad(msg: str) -> InputError:
        return InputError(f"{where}: GroupNorm pattern at {label!r}: {msg}")

    ins = g.inputs(inorm)
    pre = g.producer.get(ins[0])
    if pre is None or pre.op_type != "Reshape":
        raise bad("InstanceNormalization input is not a Reshape")
    shape = g.const(g.inputs(pre)[1])
    if shape is None or shape.size != 3 or int(shape[0]) != 0 or int(shape[2]) != -1:
        raise bad(f"Reshape shape is {None if shape is None else shape.tolist()}, not [0, G, -1]")
    num_groups = int(shape[1])
    scale, bias = g.const(ins[1]), g.const(ins[2])
    if scale is None or bias is None:
        raise bad("InstanceNormalization scale/bias are not constants")
    if scale.shape != (num_groups,) or not np.all(scale == 1):
        raise bad("InstanceNormalization scale is not ones(G)")
    if bias.shape != (num_groups,) or not np.all(bias == 0):
        raise bad("InstanceNormalization bias is not zeros(G)")
    eps = float(_attr(inorm, "epsilon", 1e-5))  # type: ignore[arg-type]
    if not np.isclose(eps, _GN_EPS, rtol=1e-4, atol=0):
        raise bad(f"epsilon {eps:g} != 1e-5")
    post = g.only_consumer(inorm.output[0], "Reshape")
    if post is None:
        raise bad("InstanceNormalization output does not feed one Reshape")
    mul = g.only_consumer(post.output[0], "Mul")
    if mul is None:
        raise bad("missing Mul(γ) after the Reshape")
    add = g.only_consumer(mul.output[0], "Add")
    if add is None:
        raise bad("missing Add(β) after Mul(γ)")
    mg, ab = _mul_add_const(g, mul), _mul_add_const(g, add)
    if mg is None or ab is None:
        raise bad("γ/β are not constants")
    gamma, beta = mg[0], ab[0]
    gv, bv = g.constants[gamma], g.constants[beta]
    channels = gv.size
    if gv.shape not in ((channels, 1, 1), (channels,)) or bv.shape != gv.shape:
        raise bad(f"γ/β shapes {gv.shape}/{bv.shape} are not (C, 1, 1)")
    if channels % num_groups:
        raise bad(f"{channels} channels not divisible by {num_groups} groups")
    gn_nodes.add(id(mul))
    return OnnxGroupNorm(
        node=label,
        gamma=gamma,
        beta=beta,
        num_groups=num_groups,
        channels=channels,
        eps=eps,
        uses=1,
    )


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

    consts = graph.constants
    consumed = 0
    # values are collected first and assigned only once every check has passed
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def put(t: torch.Tensor, value: np.ndarray | float) -> None:
        pending.append((t, torch.tensor(np.asarray(value, dtype=np.float32)).reshape(t.shape)))

    # ---- convs (+ the BN each one feeds)
    bn_paired = set()
    for (mpath, conv), oc in zip(trace.convs, graph.convs):
        loc = f"{where}: conv {oc.node!r} ↔ {mpath}"
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
        bn = trace.bn_after.get(mpath)
        expects_bias = conv.bias is not None or bn is not None
        if (oc.bias is not None) != expects_bias:
            raise InputError(
                f"{loc}: ONNX conv {'has' if oc.bias is not None else 'lacks'} a bias but the "
                f"module {'has' if expects_bias else 'has no'} bias or following BatchNorm"
            )
        _check_name(loc, oc.weight, f"{mpath}.weight")
        partner = _merged_partner(mpath)
        _check_name(loc, oc.bias, f"{mpath}.bias", (f"{partner}.bias",) if partner else ())
        w = consts[oc.weight]
        put(conv.weight, w)
        consumed += w.size
        if oc.bias is None:
            continue
        b = consts[oc.bias].reshape(-1)
        if b.size != oc.weight_shape[0]:
            raise InputError(f"{loc}: bias has {b.size} values for {oc.weight_shape[0]} channels")
        consumed += b.size
        if bn is None:
            put(conv.bias, b)  # type: ignore[arg-type]
            continue
        bpath, bnm = bn
        bn_paired.add(bpath)
        if conv.bias is not None:
            put(conv.bias, np.zeros_like(b))
        if bnm.weight is None or bnm.bias is None or bnm.running_var is None:
            raise InputError(f"{loc}: BatchNorm {bpath} is not affine with running stats")
        put(bnm.weight, np.ones_like(b))
        put(bnm.bias, b)
        put(bnm.running_mean, np.zeros_like(b))  # type: ignore[arg-type]
        put(bnm.running_var, np.full_like(b, 1.0 - bnm.eps))  # type: ignore[arg-type]
    unpaired = [p for p, _ in trace.batch_norms if p not in bn_paired]
    if unpaired:
        raise ConfigError(f"{label}: BatchNorms not fed directly by a conv: {unpaired[:5]}")

    # ---- GroupNorm
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
        put(gn.weight, consts[og.gamma].reshape(-1))
        put(gn.bias, consts[og.beta].reshape(-1))
        consumed += 2 * og.channels

    # ---- Scale
    if len(trace.scales) != len(graph.scales) or len(graph.scales) not in (0, 3):
        raise InputError(
            f"{where}: {len(graph.scales)} Scale Muls in the graph, {len(trace.scales)} Scale "
            f"modules in {label} (expected 3 or 0 on both sides)"
        )
    for (spath, smod), osc in zip(trace.scales, graph.scales):
        loc = f"{where}: Scale {osc.name!r} ↔ {spath}"
        _check_name(loc, osc.name, f"{spath}.scale")
        put(_scale_param(smod), osc.value)  # type: ignore[arg-type]
        consumed += 1

    # ---- count check (scrfd-spec §8.2 rule 7)
    expected = trace.fused_param_count(model)
    if consumed != expected:
        raise InputError(
            f"{where}: consumed {consumed} weight values but {label} has {expected} "
            "BN-fused parameters"
        )
    with torch.no_grad():
        for t, v in pending:
            t.copy_(v.to(dtype=t.dtype, device=t.device))
    model.eval()
    if form == "fused":
        fused = model.fuse()
        if isinstance(fused, nn.Module):
            model = fused
        model.eval()
    return model


def _module_pads(conv: nn.Conv2d, loc: str) -> tuple[int, ...]:
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        raise InputError(f"{loc}: module padding {conv.padding!r}/{conv.padding_mode} unsupported")
    ph, pw = (int(p) for p in conv.padding)
    return (ph, pw, ph, pw)
