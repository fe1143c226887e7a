"""Zero-shot NAS proxies that run a MasterNet (reference spec §1.5).

DDSAR itself is analytic (see ``damofd.search.ddsar``); the proxies here are the other scores the
released search can select with ``--zero_shot_score``. They follow the Zen-NAS/DamoFD code
(``DDSAR/ZeroShotProxy/*.py``) and are computed on the model the reference search builds:
``MasterNet(structure, num_classes=1000, no_reslink=True)`` in train mode, after re-initialising
every weight (conv/linear weights ~ N(0, 1), biases 0, BN/GN γ = 1, β = 0).

=========  =========================================================================  ==========
name       score (higher is better for every proxy)                                  input
=========  =========================================================================  ==========
Zen        ln(mean_b Σ|f(x) − f(x + 0.01·ε)|) + Σ_BN ln √mean(running_var)          pre-GAP
NASWOT     ln|det K|, K = Σ_ReLU (b bᵀ + (1−b)(1−b)ᵀ), b = [ReLU input > 0]          all ReLUs
SynFlow    −Σ_layers mean_filters Σ |θ ⊙ ∂(Σ logits)/∂θ|, |θ|, float64, ones input   logits
GradNorm   ‖∇_θ soft-CE(logits, random one-hot)‖₂                                     logits
TE-NAS     −λ_max/λ_min of the NTK G Gᵀ, G = per-sample ∂(Σ_c logit)/∂(all weights)   logits
=========  =========================================================================  ==========

Use :func:`compute_torch_proxy` for a structure, or the per-proxy functions on a model you built.
Seeded calls draw every random number (weights, inputs, labels) from one CPU
``torch.Generator``, so the same seed gives the same score on any machine (up to float
round-off on other devices).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from damofd.device import check_device
from damofd.errors import ConfigError, InputError
from damofd.models.backbones.masternet import MasterNet, MasterReLU
from damofd.search.structure import Structure

__all__ = [
    "PROXY_NUM_CLASSES",
    "ProxyFn",
    "TORCH_PROXIES",
    "ZEN_MIXUP_GAMMA",
    "TorchProxy",
    "compute_torch_proxy",
    "gaussian_reinit",
    "get_torch_proxy",
    "gradnorm_score",
    "naswot_kernel",
    "naswot_score",
    "proxy_model",
    "synflow_score",
    "te_nas_score",
    "zen_score",
]

PROXY_NUM_CLASSES = 1000
"""Classifier width of the proxy model (the reference search passes ``--num_classes 1000``)."""

ZEN_MIXUP_GAMMA = 0.01
"""Perturbation scale of the Zen score (reference ``--gamma`` / ``mixup_gamma`` default)."""


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _randn(shape: Sequence[int], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """N(0,1) drawn on the CPU (so a seed gives the same numbers on any device), then moved."""
    return torch.randn(tuple(shape), generator=generator).to(device=like.device, dtype=like.dtype)


def _model_tensor(model: nn.Module) -> Tensor:
    return next(model.parameters())


@torch.no_grad()
def gaussian_reinit(model: nn.Module, generator: torch.Generator | None = None) -> None:
    """The proxies' re-initialisation (reference ``network_weight_gaussian_init``).

    Conv2d / Linear weights ~ N(0, 1) and biases 0; BatchNorm2d / GroupNorm γ = 1, β = 0.
    BN running statistics are left untouched, as in the reference.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            m.weight.copy_(_randn(m.weight.shape, generator, m.weight))
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            m.weight.fill_(1.0)
            m.bias.zero_()


def _input(model: nn.Module, batch_size: int, resolution: int, generator: torch.Generator | None):
    return _randn((batch_size, 3, resolution, resolution), generator, _model_tensor(model))


# ---------------------------------------------------------------------------------------------
# Zen
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def zen_score(
    model: MasterNet,
    *,
    resolution: int = 224,
    batch_size: int = 16,
    repeat: int = 1,
    mixup_gamma: float = ZEN_MIXUP_GAMMA,
    generator: torch.Generator | None = None,
) -> float:
    """Zen score (Zen-NAS ``compute_zen_score.py``; DamoFD's ``compute_zen_score_org.py``).

    For each of ``repeat`` draws: re-initialise, draw x, ε ~ N(0,1) of shape (B, 3, R, R), and
    score ``ln(mean_b Σ_{c,h,w} |f(x) − f(x + γ·ε)|) + Σ_BN ln √mean(running_var)`` with
    ``f = forward_pre_gap`` in train mode (BN uses batch statistics; its running statistics are
    updated by both forwards and, as in the reference, carry over between draws). Returns the
    mean over draws. DamoFD's own ``Masternet.forward_pre_GAP`` cannot run (typo, spec §10.3);
    this is the working equivalent.
    """
    model.train()
    scores: list[float] = []
    for _ in range(repeat):
        gaussian_reinit(model, generator)
        x = _input(model, batch_size, resolution, generator)
        eps = _input(model, batch_size, resolution, generator)
        out = model.forward_pre_gap(x)
        mixed = model.forward_pre_gap(x + mixup_gamma * eps)
        diff = torch.sum(torch.abs(out - mixed), dim=[1, 2, 3]).mean()
        log_bn = 0.0
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                log_bn += float(torch.log(torch.sqrt(torch.mean(m.running_var))))
        scores.append(float(torch.log(diff)) + log_bn)
    return float(np.mean(scores))


# ---------------------------------------------------------------------------------------------
# NASWOT
# ---------------------------------------------------------------------------------------------
def naswot_kernel(patterns: Sequence[Tensor]) -> Tensor:
    """NASWOT kernel ``K = Σ_l (b_l b_lᵀ + (1 − b_l)(1 − b_l)ᵀ)`` (B×B, float64).

    ``patterns[l]`` is the (B, N_l) binary activation pattern of layer ``l``. ``K_ij`` is the
    number of units on which samples i and j agree (``N − Hamming distance``). Computed as
    ``2·b bᵀ + N − n_i − n_j`` with ``n = b.sum(1)``, which is exact in float64.
    """
    if not patterns:
        raise InputError("NASWOT needs at least one ReLU pattern")
    b0 = patterns[0]
    k = torch.zeros(b0.shape[0], b0.shape[0], dtype=torch.float64, device=b0.device)
    for b in patterns:
        b = b.reshape(b.shape[0], -1)
        n_units = b.shape[1]
        # float32 dot products of 0/1 vectors are exact below 2**24 terms
        dt = torch.float32 if n_units < 2**24 else torch.float64
        bf = b.to(dt)
        same_on = (bf @ bf.T).to(torch.float64)
        n = bf.sum(1).to(torch.float64)
        k += 2.0 * same_on + n_units - n[:, None] - n[None, :]
    return k


@torch.no_grad()
def naswot_score(
    model: MasterNet,
    *,
    resolution: int = 224,
    batch_size: int = 16,
    generator: torch.Generator | None = None,
) -> float:
    """NASWOT (Mellor et al.; Zen-NAS ``compute_NASWOT_score.py``): ``ln|det K|``.

    Re-initialise, draw x ~ N(0,1) (B, 3, R, R), run the classifier forward in train mode and
    collect ``b = [input of every ReLU > 0]`` per sample (functional ReLUs of MasterNet, via
    forward hooks on its :class:`MasterReLU` slots). Returns ``slogdet(K).logabsdet`` of
    :func:`naswot_kernel`. The reference also runs a backward pass (an input Jacobian it
    discards); it does not change K and is skipped here.
    """
    model.train()
    gaussian_reinit(model, generator)
    x = _input(model, batch_size, resolution, generator)
    patterns: list[Tensor] = []

    def hook(_m: nn.Module, inputs: tuple[Tensor, ...], _out: Tensor) -> None:
        patterns.append((inputs[0] > 0).reshape(inputs[0].shape[0], -1))

    handles = [r.register_forward_hook(hook) for r in model.modules() if isinstance(r, MasterReLU)]
    try:
        model.forward_logits(x)
    finally:
        for h in handles:
            h.remove()
    k = naswot_kernel(patterns)
    return float(torch.linalg.slogdet(k).logabsdet)


# ---------------------------------------------------------------------------------------------
# SynFlow
# ---------------------------------------------------------------------------------------------
def _remove_batchnorm(net: nn.Module) -> None:
    """Replace every BatchNorm2d child by ``nn.Identity`` (in place)."""
    for _name, parent in list(net.named_modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(parent, child_name, nn.Identity())


def synflow_score(
    model: MasterNet,
    *,
    resolution: int = 224,
    batch_size: int = 16,
    generator: torch.Generator | None = None,
    batchnorm: Literal["train", "remove"] = "train",
) -> float:
    """SynFlow (Tanaka et al.; Zen-NAS ``compute_syncflow_score.py``), **returned negated**.

    Re-initialise, replace every parameter and buffer by its absolute value, cast to float64,
    feed ``ones(1, 3, R, R)`` and back-propagate ``Σ logits``; for every Conv2d/Linear take
    ``|θ ⊙ ∂L/∂θ|``, sum it per output filter, average over filters and sum over layers. The
    result is multiplied by −1 exactly as the reference does (so a *larger* synaptic flow gives a
    *smaller* score); ``batch_size`` is ignored (the reference draws a batch only for its shape).

    ``batchnorm="train"`` (default, used by :func:`compute_torch_proxy`) keeps BatchNorm in
    train mode (batch statistics of the single all-ones image), exactly as the Zen-NAS/DamoFD
    code does; the maps are then constant except near the zero-padded borders, so the value is
    dominated by border effects and varies erratically between architectures. Train-mode BN
    needs more than one value per channel, so the last feature map must be larger than 1×1
    (``compute_torch_proxy`` checks this). ``batchnorm="remove"`` replaces every BatchNorm by
    the identity, as the original SynFlow (Samsung zero-cost-nas) does. The model passed in is
    not modified (a float64 copy is scored).
    """
    del batch_size
    if batchnorm not in ("train", "remove"):
        raise ConfigError(f"batchnorm must be 'train' or 'remove', got {batchnorm!r}")
    gaussian_reinit(model, generator)
    net = copy.deepcopy(model).double().train()
    if batchnorm == "remove":
        _remove_batchnorm(net)
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    net.zero_grad(set_to_none=True)
    x = torch.ones(
        1, 3, resolution, resolution, dtype=torch.float64, device=_model_tensor(net).device
    )
    torch.sum(net.forward_logits(x)).backward()
    score = 0.0
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            g = m.weight.grad
            if g is None:
                continue
            flow = torch.abs(m.weight * g).reshape(m.weight.shape[0], -1)
            score += float(flow.detach().sum(1).mean())
    return -score


# ---------------------------------------------------------------------------------------------
# GradNorm
# ---------------------------------------------------------------------------------------------
def gradnorm_score(
    model: MasterNet,
    *,
    resolution: int = 224,
    batch_size: int = 16,
    generator: torch.Generator | None = None,
) -> float:
    """GradNorm (Abdelfattah et al.; Zen-NAS ``compute_gradnorm_score.py``).

    Re-initialise, draw x ~ N(0,1) (B, 3, R, R) and labels uniform in [0, num_classes), compute
    the soft cross-entropy ``−mean_b Σ_c onehot·log_softmax(logits)`` in train mode and return
    the L2 norm of all parameter gradients concatenated.
    """
    model.train()
    gaussian_reinit(model, generator)
    x = _input(model, batch_size, resolution, generator)
    model.zero_grad(set_to_none=True)
    logits = model.forward_logits(x)
    c = logits.shape[1]
    y = torch.randint(0, c, (batch_size,), generator=generator).to(logits.device)
    onehot = F.one_hot(y, c).to(logits.dtype)
    loss = -(onehot * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    sq = sum(float(g.double().pow(2).sum()) for g in grads if g is not None)
    return math.sqrt(sq)


# ---------------------------------------------------------------------------------------------
# TE-NAS (NTK condition number)
# ---------------------------------------------------------------------------------------------
def te_nas_score(
    model: MasterNet,
    *,
    resolution: int = 224,
    batch_size: int = 16,
    generator: torch.Generator | None = None,
) -> float:
    """TE-NAS NTK part (Chen et al.; Zen-NAS ``compute_te_nas_score.compute_NTK_score``).

    Re-initialise, draw x ~ N(0,1) (B, 3, R, R), forward the batch in train mode and take, for
    each sample i, the gradient of ``Σ_c logits[i, c]`` w.r.t. every parameter whose name
    contains ``weight`` (convs, BN γ, fc). With G the (B, P) matrix of these gradients,
    NTK = G Gᵀ and the score is ``−λ_max/λ_min`` (``torch.linalg.eigvalsh``, ascending;
    NaN mapped by ``numpy.nan_to_num`` as the reference). The Gram matrix and eigenvalues are
    computed in float64 (the reference uses float32 ``torch.symeig``, removed from PyTorch),
    which only changes round-off. Zen-NAS's copy of this proxy skips the re-initialisation;
    this module re-initialises like every other proxy (spec §1.5).
    """
    model.train()
    gaussian_reinit(model, generator)
    x = _input(model, batch_size, resolution, generator)
    weights = [p for n, p in model.named_parameters() if "weight" in n and p.requires_grad]
    model.zero_grad(set_to_none=True)
    per_sample = model.forward_logits(x).sum(dim=1)
    ntk = torch.zeros(batch_size, batch_size, dtype=torch.float64)
    rows: list[Tensor] = []
    for i in range(batch_size):
        grads = torch.autograd.grad(
            per_sample[i], weights, retain_graph=i + 1 < batch_size, allow_unused=True
        )
        flat = [g.reshape(-1) for g in grads if g is not None]
        rows.append(torch.cat(flat).to("cpu"))
    # Gram matrix in float64, column-chunked to bound memory on large backbones
    g = torch.stack(rows)
    del rows
    step = 1 << 20
    for a in range(0, g.shape[1], step):
        chunk = g[:, a : a + step].double()
        ntk += chunk @ chunk.T
    eig = torch.linalg.eigvalsh(ntk)
    cond = float(np.nan_to_num((eig[-1] / eig[0]).item()))
    return -cond


# ---------------------------------------------------------------------------------------------
# registry and entry point
# ---------------------------------------------------------------------------------------------
class ProxyFn(Protocol):
    """Signature of one proxy draw on a model (see :class:`TorchProxy`)."""

    def __call__(
        self,
        model: MasterNet,
        *,
        resolution: int,
        batch_size: int,
        generator: torch.Generator | None,
    ) -> float: ...


@dataclass(frozen=True, slots=True)
class TorchProxy:
    """A proxy that needs the MasterNet module.

    ``fn(model, *, resolution, batch_size, generator) -> float`` scores one draw;
    ``repeats_on_same_model`` marks Zen, whose ``repeat`` loop reuses one model (BN running
    statistics accumulate, as in the reference). ``fixed_batch`` is the batch size the
    proxy actually feeds (SynFlow: 1) for the train-mode BN size check.
    """

    name: str
    fn: ProxyFn
    summary: str
    repeats_on_same_model: bool = False
    fixed_batch: int | None = None


def _zen_one(
    model: MasterNet, *, resolution: int, batch_size: int, generator: torch.Generator | None
) -> float:
    return zen_score(
        model, resolution=resolution, batch_size=batch_size, repeat=1, generator=generator
    )


TORCH_PROXIES: Mapping[str, TorchProxy] = MappingProxyType(
    {
        "Zen": TorchProxy(
            "Zen",
            _zen_one,
            "log feature change under a 0.01 input perturbation + log BN scaling",
            repeats_on_same_model=True,
        ),
        "NASWOT": TorchProxy("NASWOT", naswot_score, "log|det| of the ReLU-pattern kernel"),
        "SynFlow": TorchProxy(
            "SynFlow", synflow_score, "negated synaptic flow (|θ|, ones input)", fixed_batch=1
        ),
        "GradNorm": TorchProxy("GradNorm", gradnorm_score, "L2 norm of the CE gradient"),
        "TE-NAS": TorchProxy("TE-NAS", te_nas_score, "negated NTK condition number"),
    }
)
"""The five torch proxies by canonical name (spec §1.5)."""

_ALIASES = {"syncflow": "SynFlow", "te": "TE-NAS", "tenas": "TE-NAS", "te_nas": "TE-NAS"}


def get_torch_proxy(name: str) -> TorchProxy:
    """Look a proxy up by name (case-insensitive; the reference spelling ``Syncflow`` works)."""
    key = name.strip().lower()
    for canon in TORCH_PROXIES:
        if canon.lower() == key:
            return TORCH_PROXIES[canon]
    if key in _ALIASES:
        return TORCH_PROXIES[_ALIASES[key]]
    raise ConfigError(
        f"unknown zero-shot proxy {name!r}; valid torch proxies: {', '.join(TORCH_PROXIES)}"
    )


def proxy_model(structure: Structure | str) -> MasterNet:
    """The network the reference search scores: 1000-way classifier, no residual links."""
    return MasterNet(structure, num_classes=PROXY_NUM_CLASSES, no_reslink=True)


def _last_map_size(structure: Structure, resolution: int) -> int:
    r = resolution
    for b in structure:
        if b.stride == 2:
            r = (r + 1) // 2  # every stride-2 conv pads (k−1)/2: out = ceil(r / 2)
    return r


def compute_torch_proxy(
    name: str,
    structure: Structure | str,
    *,
    resolution: int = 224,
    batch_size: int = 16,
    seed: int | None = None,
    device: str = "cpu",
    repeat: int = 1,
) -> float:
    """Score ``structure`` with the torch proxy ``name`` (one of :data:`TORCH_PROXIES`).

    Builds :func:`proxy_model` (``num_classes=1000``, ``no_reslink=True``) on ``device`` and
    returns the mean score over ``repeat`` draws (each re-initialises the weights and draws new
    inputs). Inputs are (batch_size, 3, resolution, resolution). ``seed`` makes the result
    reproducible (one CPU generator for all draws; the global RNG is not touched); ``None``
    uses the global RNG. Raises :class:`ConfigError` for an unknown name or device and
    :class:`InputError` for bad sizes.
    """
    proxy = get_torch_proxy(name)
    for label, v in (("resolution", resolution), ("batch_size", batch_size), ("repeat", repeat)):
        if not isinstance(v, int) or v < 1:
            raise InputError(f"{label} must be a positive integer, got {v!r}")
    struct = Structure.of(structure)
    fed = proxy.fixed_batch or batch_size
    last = _last_map_size(struct, resolution)
    if fed * last * last < 2:
        raise InputError(
            f"{proxy.name} at resolution {resolution} with batch {fed} leaves one value per "
            f"channel in the last train-mode BatchNorm ({last}×{last} map); use a larger "
            "resolution or batch"
        )
    dev = check_device(device)
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    model = proxy_model(struct).to(dev)
    if proxy.repeats_on_same_model:
        return zen_score(
            model, resolution=resolution, batch_size=batch_size, repeat=repeat, generator=gen
        )
    scores = [
        proxy.fn(model, resolution=resolution, batch_size=batch_size, generator=gen)
        for _ in range(repeat)
    ]
    return float(np.mean(scores))
