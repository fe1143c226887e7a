"""Read an official SCRFD ONNX graph into plain records (scrfd-spec §8.1).

:func:`read_scrfd_onnx` walks the graph in topological order and returns a
:class:`ScrfdOnnxGraph`: the unique Conv nodes (de-duplicated by weight initializer, Identity
aliases resolved) with their weights, groups, strides, pads and biases; the GroupNorms spelled as
``Reshape → InstanceNormalization → Reshape → Mul(γ) → Add(β)``; the per-level Scales (a ``Mul``
by a scalar initializer); and the output names. :mod:`damofd.models.onnx_import` matches these
records to a zoo configuration and copies them into a PyTorch detector.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from damofd.errors import InputError

if TYPE_CHECKING:
    import onnx

__all__ = [
    "ConvKey",
    "OnnxConv",
    "OnnxGroupNorm",
    "OnnxScale",
    "ScrfdOnnxGraph",
    "read_scrfd_onnx",
]

#: ``(weight shape, group, stride)`` of one convolution; the unit of the config fingerprint.
ConvKey = tuple[tuple[int, ...], int, tuple[int, ...]]
_GN_EPS = 1e-5


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
    convs = _read_convs(g)
    gn_nodes: set[int] = set()  # ids of Mul nodes that belong to GN patterns
    group_norms = _read_group_norms(g, gn_nodes)
    scales = _read_scales(g, gn_nodes, initializer_names)

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
        convs=convs,
        group_norms=group_norms,
        scales=scales,
        op_counts=op_counts,
        constants=g.constants,
    )


def _read_convs(g: _Graph) -> tuple[OnnxConv, ...]:
    """The unique Conv nodes, de-duplicated by weight initializer, in topological order."""
    conv_nodes: dict[str, list[onnx.NodeProto]] = {}  # weight name -> its nodes, first-use order
    for n in g.nodes:
        if n.op_type != "Conv":
            continue
        ins = g.inputs(n)
        if len(ins) < 2 or g.const(ins[1]) is None:
            raise InputError(f"{g.where}: Conv node {_node_label(n)!r} has no constant weight")
        conv_nodes.setdefault(ins[1], []).append(n)
    return tuple(_read_conv(g, wname, nodes) for wname, nodes in conv_nodes.items())


def _read_conv(g: _Graph, wname: str, nodes: list[onnx.NodeProto]) -> OnnxConv:
    """One :class:`OnnxConv` from the Conv nodes that share the weight ``wname``."""
    where = g.where
    first = nodes[0]
    ins = g.inputs(first)
    w = g.constants[wname]
    bias = ins[2] if len(ins) > 2 and ins[2] else None
    if bias is not None and g.const(bias) is None:
        raise InputError(f"{where}: Conv node {_node_label(first)!r} has a non-constant bias")
    for other in nodes[1:]:
        if g.inputs(other)[2:3] != ins[2:3]:
            raise InputError(f"{where}: Conv nodes sharing weight {wname!r} use different biases")
    nd = w.ndim - 2
    conv = OnnxConv(
        node=_node_label(first),
        weight=wname,
        bias=bias,
        weight_shape=tuple(int(s) for s in w.shape),
        group=int(_attr(first, "group", 1)),  # type: ignore[call-overload]
        strides=tuple(int(s) for s in _attr(first, "strides", [1] * nd)),  # type: ignore[attr-defined]
        pads=tuple(int(s) for s in _attr(first, "pads", [0] * (2 * nd))),  # type: ignore[attr-defined]
        dilations=tuple(int(s) for s in _attr(first, "dilations", [1] * nd)),  # type: ignore[attr-defined]
        uses=len(nodes),
    )
    if _attr(first, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise InputError(f"{where}: Conv node {_node_label(first)!r} uses auto_pad")
    return conv


def _read_group_norms(g: _Graph, gn_nodes: set[int]) -> tuple[OnnxGroupNorm, ...]:
    """The GroupNorm patterns, one per γ initializer; adds their Mul(γ) node ids to gn_nodes."""
    gn_by_gamma: dict[str, OnnxGroupNorm] = {}
    gn_uses: Counter[str] = Counter()
    for n in g.nodes:
        if n.op_type != "InstanceNormalization":
            continue
        gn = _parse_group_norm(g, n, g.where, gn_nodes)
        gn_uses[gn.gamma] += 1
        prev = gn_by_gamma.get(gn.gamma)
        if prev is None:
            gn_by_gamma[gn.gamma] = gn
        elif (prev.beta, prev.num_groups, prev.channels) != (gn.beta, gn.num_groups, gn.channels):
            raise InputError(f"{g.where}: GroupNorms sharing γ {gn.gamma!r} differ")
    return tuple(
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


def _read_scales(
    g: _Graph, gn_nodes: set[int], initializer_names: set[str]
) -> tuple[OnnxScale, ...]:
    """The Scale Muls: Mul(conv output, scalar float initializer), outside GroupNorm patterns."""
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
    return tuple(
        OnnxScale(node=s.node, name=s.name, value=s.value, uses=scale_uses[s.name])
        for s in scale_first.values()
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
