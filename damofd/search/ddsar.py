"""DDSAR: the Distribution-Dependent Stage-Aware Ranking score, exactly as released (spec §1.2).

DDSAR is purely analytic: no weights, no forward pass. For a square input of ``R`` pixels and
``d0 = 3``, walk the blocks in order with a float height ``h`` (starting at ``R``, halved at the
first sub-layer of every stride-2 block). For one block with input width ``c``, output width
``out``, bottleneck ``btn`` and ``L`` sub-layers, with ``E(x) = h²·d0·ln(x/d0)`` evaluated at the
*current* ``h``:

* ``T1 = ln(h²·d0)`` at block entry,
* ``T2`` = Σ over sub-layers of the ``E`` terms below (``↓`` marks where ``h`` is halved),
* ``T3`` = Σ of kernel sizes,

======== =================================================== ================
kind     T2 terms per sub-layer                              T3 per sub-layer
======== =================================================== ================
Conv     E(c) ↓                                              k
KXKX     E(c) ↓ E(btn)                                       k1 + k2
K1KXK1   E(c) + E(btn) ↓ E(btn) + E(out) + 2·E(btn)          2k + 4
IDWE     E(c) + E(dw) ↓ E(dw) + E(btn) + 2·E(dw), dw = e·btn 2k + 4
======== =================================================== ================

after each sub-layer ``c = out``. Then ``SAR_b = ln(T1 + T2) + α·T3`` and
``DDSAR = Σ_b w_b·SAR_b`` over the first five blocks with ``w = (0.2, 0.27, 0.25, 0.18, 0.1)``.
``α = 0.005`` in the released code (the README quotes 0.25 for the 500M search). Index 0 is the
stem. The terms intentionally do not mirror the built layers (e.g. IDWE uses ``e·btn`` unrounded,
projections are ignored): this module reproduces the released formula, not a corrected one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from damofd.errors import InputError
from damofd.search.cost import BlockKey, block_key
from damofd.search.structure import BLOCK_TYPES, BlockKind, Structure

__all__ = [
    "D0",
    "DEFAULT_ALPHA",
    "DEFAULT_STAGE_WEIGHTS",
    "README_ALPHA",
    "DDSARResult",
    "SARModel",
    "SARTerms",
    "ddsar",
    "sar_terms",
]

D0 = 3
"""Input depth ``d0`` of the linear-region bound (RGB)."""
DEFAULT_ALPHA = 0.005
"""α of the released code (every search script)."""
README_ALPHA = 0.25
"""α quoted by the README/paper for the 500M search (commented out in the released code)."""
DEFAULT_STAGE_WEIGHTS: tuple[float, ...] = (0.2, 0.27, 0.25, 0.18, 0.1)
"""β for block indices 0..4 (index 0 is the stride-2 stem)."""


@dataclass(frozen=True, slots=True)
class SARTerms:
    """α-independent part of one block's SAR: ``SAR = log_term + α·kernel_sum``.

    ``log_term = ln(T1 + T2)``; ``h_out`` is the (float) height after the block.
    """

    log_term: float
    kernel_sum: int
    h_out: float

    def sar(self, alpha: float) -> float:
        return self.log_term + alpha * self.kernel_sum


def _sar_terms_key(key: BlockKey, h: float) -> tuple[float, int, float]:
    """``(ln(T1 + T2), T3, h_out)`` of one block, with the reference's float operation order
    (logarithms are hoisted out of the loop, which does not change any value)."""
    name, c, out, stride, btn, sub_layers = key
    btype = BLOCK_TYPES[name]
    kind = btype.kind
    d0 = D0
    log = math.log
    h_in = h
    t1 = log(h * h * d0)
    t2: float = 0
    t3 = 0
    l_in = log(c / d0)
    l_out = log(out / d0)
    if kind is BlockKind.CONV:
        k = btype.kernel
        for _ in range(sub_layers):
            t2 += h * h * d0 * l_in
            l_in = l_out
            if stride == 2:
                h /= 2
                stride = 1
            t3 += k
    elif kind is BlockKind.KXKX:
        k1, k2 = btype.kernels
        l_btn = log(btn / d0)
        for _ in range(sub_layers):
            t2 += h * h * d0 * l_in
            if stride == 2:
                h /= 2
                stride = 1
            t2 += h * h * d0 * l_btn
            l_in = l_out
            t3 += k1
            t3 += k2
    elif kind is BlockKind.K1KXK1:
        k = btype.kernel
        l_btn = log(btn / d0)
        for _ in range(sub_layers):
            t2 += h * h * d0 * l_in
            t2 += h * h * d0 * l_btn
            if stride == 2:
                h /= 2
                stride = 1
            t2 += h * h * d0 * l_btn
            t2 += h * h * d0 * l_out
            t2 += h * h * d0 * l_btn
            t2 += h * h * d0 * l_btn
            l_in = l_out
            t3 += k * 2
            t3 += 4
    else:  # IDWE; dw width is e·btn without rounding (reference)
        k = btype.kernel
        l_btn = log(btn / d0)
        l_dw = log((btype.expansion or 1) * btn / d0)
        for _ in range(sub_layers):
            t2 += h * h * d0 * l_in
            t2 += h * h * d0 * l_dw
            if stride == 2:
                h /= 2
                stride = 1
            t2 += h * h * d0 * l_dw
            t2 += h * h * d0 * l_btn
            t2 += h * h * d0 * l_dw
            t2 += h * h * d0 * l_dw
            l_in = l_out
            t3 += k * 2
            t3 += 4
    if t1 + t2 <= 0:  # widths below d0 = 3 make E(x) negative; the reference raises here too
        raise InputError(
            f"DDSAR is undefined for block {key[0]}({','.join(str(v) for v in key[1:] if v)}) at "
            f"input height {h_in:g}: T1 + T2 = {t1 + t2:g} <= 0 (channel widths below d0 = 3)"
        )
    return log(t1 + t2), t3, h


def sar_terms(structure: Structure | str, resolution: int = 224) -> tuple[SARTerms, ...]:
    """α-independent SAR terms of every block of ``structure`` at a ``resolution``² input."""
    s = Structure.of(structure)
    h = float(_check_resolution(resolution))
    out: list[SARTerms] = []
    for b in s:
        lt, t3, h = _sar_terms_key(block_key(b), h)
        out.append(SARTerms(lt, t3, h))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class DDSARResult:
    """DDSAR of one structure. ``stages`` are the SARs of blocks 0..n−1 (n = len(weights))."""

    score: float
    stages: tuple[float, ...]
    resolution: int
    alpha: float
    weights: tuple[float, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "score": self.score,
            "stages": list(self.stages),
            "resolution": self.resolution,
            "alpha": self.alpha,
            "weights": list(self.weights),
        }


def _check_resolution(resolution: int) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise InputError(f"resolution must be a positive integer (pixels), got {resolution!r}")
    return resolution


def check_weights(weights: Sequence[float]) -> tuple[float, ...]:
    """Validate stage weights (a non-empty sequence of finite floats)."""
    w = tuple(float(x) for x in weights)
    if not w:
        raise InputError("stage weights must not be empty")
    if not all(math.isfinite(x) for x in w):
        raise InputError(f"stage weights must be finite numbers, got {w}")
    return w


def ddsar(
    structure: Structure | str,
    resolution: int = 224,
    alpha: float = DEFAULT_ALPHA,
    weights: Sequence[float] = DEFAULT_STAGE_WEIGHTS,
) -> DDSARResult:
    """DDSAR score of ``structure`` for a ``resolution``×``resolution`` input (spec §1.2).

    Raises :class:`~damofd.errors.InputError` when the structure has fewer blocks than there are
    stage weights (the reference raises ``KeyError``). Blocks after the last weighted one are
    ignored, as in the reference (the search itself rejects nets with ≠ 5 blocks).
    """
    s = Structure.of(structure)
    w = check_weights(weights)
    if len(s) < len(w):
        raise InputError(
            f"DDSAR needs at least {len(w)} blocks (stem + {len(w) - 1} stages), "
            f"the structure has {len(s)}: {s.format()}"
        )
    terms = sar_terms(s[: len(w)], resolution)
    stages = tuple(t.log_term + alpha * t.kernel_sum for t in terms)
    score: float = 0
    for wi, si in zip(w, stages):
        score += wi * si
    return DDSARResult(score, stages, resolution, float(alpha), w)


class SARModel:
    """Memoised DDSAR for the search: SAR terms cached by ``(BlockKey, h)``.

    ``score(keys)`` returns ``None`` when the structure does not have exactly ``len(weights)``
    blocks (the search's rejection rule).
    """

    __slots__ = ("_cache", "alpha", "resolution", "weights")

    def __init__(
        self,
        resolution: int = 224,
        alpha: float = DEFAULT_ALPHA,
        weights: Sequence[float] = DEFAULT_STAGE_WEIGHTS,
    ) -> None:
        self.resolution = _check_resolution(resolution)
        self.alpha = float(alpha)
        self.weights = check_weights(weights)
        self._cache: dict[tuple[BlockKey, float], tuple[float, int, float]] = {}

    def stages(self, keys: tuple[BlockKey, ...]) -> tuple[float, ...]:
        cache = self._cache
        alpha = self.alpha
        h = float(self.resolution)
        out = []
        for key in keys:
            ck = (key, h)
            hit = cache.get(ck)
            if hit is None:
                hit = cache[ck] = _sar_terms_key(key, h)
            out.append(hit[0] + alpha * hit[1])
            h = hit[2]
        return tuple(out)

    def score(self, keys: tuple[BlockKey, ...]) -> float | None:
        w = self.weights
        if len(keys) != len(w):
            return None
        cache = self._cache
        alpha = self.alpha
        h = float(self.resolution)
        total: float = 0
        for wi, key in zip(w, keys):
            ck = (key, h)
            hit = cache.get(ck)
            if hit is None:
                hit = cache[ck] = _sar_terms_key(key, h)
            total += wi * (hit[0] + alpha * hit[1])
            h = hit[2]
        return total
