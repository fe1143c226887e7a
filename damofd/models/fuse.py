"""Fold BatchNorm into the preceding convolution for inference.

Pairs are found from the data flow of one forward pass on an example input: a
:class:`~torch.nn.BatchNorm2d` whose input tensor *is* the output tensor of a
:class:`~torch.nn.Conv2d` is folded into that conv. This covers every conv→BN in the backbones
(MasterNet units and projections, MobileNetV1, the ResNetV1e stem, blocks and shortcuts) and in
BN head towers without knowing their module layout. GroupNorm cannot be folded and stays.

Folding (per output channel, eval-mode statistics)::

    s  = γ / sqrt(σ² + ε)
    W' = W · s
    b' = (b − μ) · s + β          (b = 0 for a conv without bias)

The BatchNorm module is replaced by :class:`torch.nn.Identity`, so the fused model's state dict
no longer has the BN keys and its convs gain a ``bias``; it is for inference and export only.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["fold_bn_into_conv", "fuse_conv_bn"]


@torch.no_grad()
def fold_bn_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn``'s eval-mode affine transform into ``conv`` in place (adds a bias if needed)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    w = conv.weight
    scale = torch.rsqrt(bn.running_var.to(torch.float64) + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.to(torch.float64)
    bias = conv.bias.to(torch.float64) if conv.bias is not None else torch.zeros_like(scale)
    new_bias = (bias - bn.running_mean.to(torch.float64)) * scale
    if bn.bias is not None:
        new_bias = new_bias + bn.bias.to(torch.float64)
    shape = (-1,) + (1,) * (w.dim() - 1)
    conv.weight.copy_((w.to(torch.float64) * scale.reshape(shape)).to(w.dtype))
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias.to(w.dtype), requires_grad=w.requires_grad)
    else:
        conv.bias.copy_(new_bias.to(w.dtype))


def _find_pairs(model: nn.Module, example: Tensor) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    produced: dict[int, nn.Conv2d] = {}
    keep_alive: list[Tensor] = []  # keeps tensor ids unique during the pass
    pairs: dict[int, tuple[nn.Conv2d, nn.BatchNorm2d]] = {}
    conflicts: list[str] = []
    names = {id(m): n for n, m in model.named_modules()}

    def conv_hook(mod: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
        produced[id(out)] = mod  # type: ignore[assignment]
        keep_alive.append(out)

    def bn_pre_hook(mod: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        conv = produced.get(id(inputs[0]))
        if conv is None:
            return
        prev = pairs.get(id(mod))
        if prev is not None and prev[0] is not conv:
            conflicts.append(names.get(id(mod), "?"))
        pairs[id(mod)] = (conv, mod)  # type: ignore[assignment]

    handles = []
    for m in model.modules():
        if type(m) is nn.Conv2d:
            handles.append(m.register_forward_hook(conv_hook))
        elif type(m) is nn.BatchNorm2d:
            handles.append(m.register_forward_pre_hook(bn_pre_hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    if conflicts:
        raise RuntimeError(f"BatchNorm fed by different convs, cannot fold: {conflicts}")
    # a conv feeding two different BNs cannot be folded either
    seen: dict[int, nn.BatchNorm2d] = {}
    for conv, bn in pairs.values():
        other = seen.setdefault(id(conv), bn)
        if other is not bn:
            raise RuntimeError(f"conv {names.get(id(conv))} feeds two BatchNorms; cannot fold")
    return list(pairs.values())


def fuse_conv_bn(model: nn.Module, example: Tensor) -> int:
    """Fold every conv→BatchNorm2d pair of ``model`` (found on ``example``); returns the count.

    The model is put in eval mode first (folding uses the running statistics).
    """
    model.eval()
    pairs = _find_pairs(model, example)
    bn_ids = {id(bn) for _, bn in pairs}
    for conv, bn in pairs:
        fold_bn_into_conv(conv, bn)
    # replace every registration of a folded BN by Identity
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if id(child) in bn_ids:
                setattr(parent, child_name, nn.Identity())
    return len(pairs)
