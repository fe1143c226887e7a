"""FLOPs and parameter counts with the rules of mmcv ``get_model_complexity_info``.

This is how both papers count (``tools/get_flops.py``; reference spec §9, scrfd-spec §7.2). A real
forward pass runs with forward hooks on the supported module types (exact type match, as mmcv):

* ``nn.Conv2d``: ``k_h·k_w·C_in/groups·C_out`` MACs per output position, plus ``C_out`` per
  position for the bias;
* ``nn.BatchNorm2d`` (and other norms with an affine transform): ``2·numel(input)``
  (``numel`` without affine); ``nn.GroupNorm`` / ``InstanceNorm`` / ``LayerNorm`` the same, but
  only when ``count_gn`` — mmcv ≥ 1.3 counts them (DamoFD's table), mmcv 1.2.6 does not
  (SCRFD's published numbers);
* ``nn.ReLU`` / ``ReLU6`` / ``LeakyReLU`` / ``PReLU`` / ``ELU`` *modules*: ``numel(output)`` per
  call (a module called twice counts twice); functional ``F.relu`` is invisible;
* max/avg pools (incl. adaptive): ``numel(input)``; ``nn.Linear``: ``numel(input)·out_features``;
  ``nn.Upsample``: ``numel(output)``;
* additions, ``F.interpolate`` and ``Scale`` are not counted.

"FLOPs" are therefore multiply-accumulates plus a few extras, exactly as published.
Parameters are all trainable parameters (``requires_grad``), the learnable Scales included.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

__all__ = [
    "Complexity",
    "PartComplexity",
    "count_params",
    "default_count_gn",
    "get_model_complexity",
]


@dataclass(frozen=True)
class PartComplexity:
    """Parameters and FLOPs of one top-level child (``backbone``, ``neck``, ``bbox_head``)."""

    params: int
    flops: int


@dataclass(frozen=True)
class Complexity:
    """Result of :func:`get_model_complexity`.

    ``input_size`` is (H, W) in pixels, batch 1. ``flops`` follow mmcv's rules (see module
    docstring); ``count_gn`` says whether GroupNorm was counted.
    """

    params: int
    flops: int
    input_size: tuple[int, int]
    count_gn: bool
    method: str = "forward"
    parts: dict[str, PartComplexity] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "flops": self.flops,
            "input_size": list(self.input_size),
            "count_gn": self.count_gn,
            "method": self.method,
            "parts": {k: {"params": v.params, "flops": v.flops} for k, v in self.parts.items()},
        }


def count_params(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameter values; shared parameters are counted once."""
    seen: set[int] = set()
    total = 0
    for p in module.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def _numel(t: Any) -> int:
    if isinstance(t, Tensor):
        return t.numel()
    if isinstance(t, (tuple, list)) and t and isinstance(t[0], Tensor):
        return t[0].numel()
    return 0


def _conv_flops(m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> int:
    assert isinstance(m, nn.Conv2d | nn.Conv1d | nn.Conv3d)
    positions = out.shape[0] * math.prod(out.shape[2:])
    per_position = math.prod(m.kernel_size) * m.in_channels
    per_position *= m.out_channels // m.groups
    flops = per_position * positions
    if m.bias is not None:
        flops += m.out_channels * positions
    return flops


def _norm_flops(m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> int:
    n = _numel(inputs)
    affine = getattr(m, "affine", False) or getattr(m, "elementwise_affine", False)
    return 2 * n if affine else n


def _act_flops(m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> int:
    return _numel(out)


def _pool_flops(m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> int:
    return _numel(inputs)


def _linear_flops(m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> int:
    return _numel(inputs) * int(out.shape[-1])


def _upsample_flops(m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> int:
    return _numel(out)


_Rule = Callable[[nn.Module, tuple[Tensor, ...], Tensor], int]

_BASE_RULES: dict[type, _Rule] = {
    nn.Conv1d: _conv_flops,
    nn.Conv2d: _conv_flops,
    nn.Conv3d: _conv_flops,
    nn.ReLU: _act_flops,
    nn.ReLU6: _act_flops,
    nn.LeakyReLU: _act_flops,
    nn.PReLU: _act_flops,
    nn.ELU: _act_flops,
    nn.MaxPool1d: _pool_flops,
    nn.MaxPool2d: _pool_flops,
    nn.MaxPool3d: _pool_flops,
    nn.AvgPool1d: _pool_flops,
    nn.AvgPool2d: _pool_flops,
    nn.AvgPool3d: _pool_flops,
    nn.AdaptiveMaxPool1d: _pool_flops,
    nn.AdaptiveMaxPool2d: _pool_flops,
    nn.AdaptiveMaxPool3d: _pool_flops,
    nn.AdaptiveAvgPool1d: _pool_flops,
    nn.AdaptiveAvgPool2d: _pool_flops,
    nn.AdaptiveAvgPool3d: _pool_flops,
    nn.BatchNorm1d: _norm_flops,
    nn.BatchNorm2d: _norm_flops,
    nn.BatchNorm3d: _norm_flops,
    nn.Linear: _linear_flops,
    nn.Upsample: _upsample_flops,
}
_GN_RULES: dict[type, _Rule] = {
    nn.GroupNorm: _norm_flops,
    nn.InstanceNorm1d: _norm_flops,
    nn.InstanceNorm2d: _norm_flops,
    nn.InstanceNorm3d: _norm_flops,
    nn.LayerNorm: _norm_flops,
}


def default_count_gn(model: nn.Module) -> bool:
    """Whether the published numbers of ``model``'s family count GroupNorm.

    DamoFD's table (reference spec §9) was produced with mmcv ≥ 1.3 (GN counted); SCRFD's
    published FLOPs follow mmcv 1.2.6 (GN not counted, scrfd-spec §7.2). Other modules: True.
    """
    config = getattr(model, "config", None)
    family = getattr(config, "family", None)
    return family != "scrfd"


def get_model_complexity(
    model: nn.Module,
    input_size: tuple[int, int] = (640, 480),
    *,
    count_gn: bool | None = None,
    method: Literal["auto", "forward", "scaled"] = "auto",
    example: Tensor | None = None,
) -> Complexity:
    """Params and FLOPs of ``model`` for a batch-1 input of ``input_size`` = (H, W).

    ``count_gn=None`` picks the family default (:func:`default_count_gn`).

    ``method``:

    * ``"forward"``: one forward pass at ``input_size`` (as mmcv does);
    * ``"scaled"``: one forward pass at 2d×2d, where d is the model's ``size_divisor`` (32 for
      the detectors and MasterNet), divided by 4 and multiplied by ``(H/d)·(W/d)``. For these
      fully convolutional models with H, W multiples of d every feature map at stride s has
      exactly H·W/s² positions and every counted term is per position, so this is *exactly* the
      forward count (the tests check the identity for every backbone block type and head
      variant), just much cheaper;
    * ``"auto"`` (default): ``"scaled"`` when the model has ``size_divisor`` and both sides are
      multiples of it and no ``example`` is given, else ``"forward"``.

    ``example`` overrides the (zero) input tensor of a ``"forward"`` count. The model runs under
    ``torch.no_grad`` in eval mode; its training mode is restored afterwards. Per-part numbers
    are reported for every top-level child (``backbone``, ``neck``, ``bbox_head``).
    """
    if count_gn is None:
        count_gn = default_count_gn(model)
    h, w = (
        (int(example.shape[2]), int(example.shape[3]))
        if example is not None
        else (
            int(input_size[0]),
            int(input_size[1]),
        )
    )
    method, factor, probe = _counting_plan(model, h, w, method, example)
    rules = dict(_BASE_RULES)
    if count_gn:
        rules.update(_GN_RULES)
    totals = _count_forward(model, rules, example, probe)
    if method == "scaled":
        uneven = {k: v for k, v in totals.items() if v % 4}
        if uneven:  # would mean some term is not per position: refuse rather than guess
            raise RuntimeError(f"scaled FLOPs count is not exact for {sorted(uneven)}")
        totals = {k: v // 4 for k, v in totals.items()}
    parts = {
        name: PartComplexity(params=count_params(child), flops=totals[name] * factor)
        for name, child in model.named_children()
    }
    return Complexity(
        params=count_params(model),
        flops=sum(totals.values()) * factor,
        input_size=(h, w),
        count_gn=bool(count_gn),
        method=method,
        parts=parts,
    )


def _counting_plan(
    model: nn.Module, h: int, w: int, method: str, example: Tensor | None
) -> tuple[Literal["forward", "scaled"], int, tuple[int, int]]:
    """Resolve ``method`` for an H×W input: (method, count multiplier, probe input size)."""
    divisor = getattr(model, "size_divisor", None)
    can_scale = (
        example is None
        and isinstance(divisor, int)
        and divisor > 0
        and h % divisor == 0
        and w % divisor == 0
        and h > 0
        and w > 0
    )
    if method == "auto":
        method = "scaled" if can_scale else "forward"
    if method == "scaled":
        if not can_scale:
            raise ValueError(
                f"scaled FLOPs counting needs a model with size_divisor and an input whose sides "
                f"are multiples of it; got {h}x{w} and size_divisor={divisor!r}"
            )
        assert isinstance(divisor, int)
        # a 2d×2d probe (a 1×1 stride-d map would break GroupNorm with one value per group);
        # every counted term is per position, so the probe count is 4 × the count per d×d cell
        return "scaled", (h // divisor) * (w // divisor), (2 * divisor, 2 * divisor)
    if method == "forward":
        return "forward", 1, (h, w)
    raise ValueError(f"unknown counting method {method!r}")


def _count_forward(
    model: nn.Module, rules: dict[type, _Rule], example: Tensor | None, probe: tuple[int, int]
) -> dict[str, int]:
    """Run ``model`` once in eval mode with counting hooks; FLOPs per top-level child name."""
    owner: dict[int, str] = {}
    for child_name, child in model.named_children():
        for m in child.modules():
            owner.setdefault(id(m), child_name)
    totals: dict[str, int] = {name: 0 for name, _ in model.named_children()}
    totals.setdefault("", 0)

    def hook(m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
        totals[owner.get(id(m), "")] += rules[type(m)](m, inputs, out)

    handles = [m.register_forward_hook(hook) for m in model.modules() if type(m) in rules]
    if example is None:
        try:
            p = next(model.parameters())
            device, dtype = p.device, p.dtype
        except StopIteration:
            device, dtype = torch.device("cpu"), torch.float32
        example = torch.zeros(1, 3, *probe, device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return totals
