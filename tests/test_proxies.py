"""Torch zero-shot proxies (spec §1.5) on small MasterNets at low resolution."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from damofd.errors import ConfigError, InputError
from damofd.models.backbones.masternet import MasterNet, MasterReLU
from damofd.search.proxies import (
    PROXY_NUM_CLASSES,
    TORCH_PROXIES,
    compute_torch_proxy,
    gaussian_reinit,
    get_torch_proxy,
    naswot_kernel,
    naswot_score,
    proxy_model,
    synflow_score,
    te_nas_score,
    zen_score,
)

# tiny networks: one torch thread (see the fixture in conftest)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# one block of every family, five blocks, total stride 32
TINY = (
    "SuperConvK3BNRELU(3,8,2,1)SuperResK3K3(8,16,2,8,1)SuperResIDWE2K3(16,16,2,8,1)"
    "SuperResK1K3K1(16,24,2,8,1)SuperResK3K5(24,32,2,8,1)"
)
R = 64  # last map 2x2
B = 4


@pytest.mark.parametrize("name", list(TORCH_PROXIES))
def test_proxy_finite_and_seeded(name: str) -> None:
    res = R if name == "SynFlow" else 32  # SynFlow's single image needs a 2x2 last map
    a = compute_torch_proxy(name, TINY, resolution=res, batch_size=B, seed=0)
    b = compute_torch_proxy(name, TINY, resolution=res, batch_size=B, seed=0)
    c = compute_torch_proxy(name, TINY, resolution=res, batch_size=B, seed=1)
    assert isinstance(a, float) and math.isfinite(a)
    assert a == b
    assert a != c


def test_registry_names_and_lookup() -> None:
    assert list(TORCH_PROXIES) == ["Zen", "NASWOT", "SynFlow", "GradNorm", "TE-NAS"]
    assert get_torch_proxy("syncflow").name == "SynFlow"  # reference spelling
    assert get_torch_proxy("te-nas").name == "TE-NAS"
    assert get_torch_proxy("zen").name == "Zen"
    # the lower-case names damofd.search.scoring uses
    for low in ("zen", "naswot", "synflow", "gradnorm", "tenas"):
        assert get_torch_proxy(low).name in TORCH_PROXIES
    with pytest.raises(ConfigError) as e:
        compute_torch_proxy("ZenNAS", TINY)
    for n in TORCH_PROXIES:
        assert n in str(e.value)


def test_bad_arguments() -> None:
    with pytest.raises(InputError, match="batch_size"):
        compute_torch_proxy("Zen", TINY, resolution=R, batch_size=0)
    with pytest.raises(InputError, match="repeat"):
        compute_torch_proxy("Zen", TINY, resolution=R, repeat=0)
    # SynFlow feeds one image through train-mode BN: a 1x1 last map cannot be normalised
    with pytest.raises(InputError, match="SynFlow"):
        compute_torch_proxy("SynFlow", TINY, resolution=32, seed=0)
    with pytest.raises(ConfigError, match="device"):
        compute_torch_proxy("Zen", TINY, resolution=R, device="nonsense:0")


def test_proxy_model_is_reference_search_model() -> None:
    m = proxy_model(TINY)
    assert m.no_reslink and not list(m.res_units())
    assert m.fc_linear is not None
    assert m.fc_linear.netblock.out_features == PROXY_NUM_CLASSES == 1000


def test_gaussian_reinit() -> None:
    m = MasterNet(TINY, num_classes=10)  # with projections (conv bias) and fc
    for p in m.parameters():
        nn.init.constant_(p, 0.3)
    gaussian_reinit(m, torch.Generator().manual_seed(0))
    ws = []
    for mod in m.modules():
        if isinstance(mod, nn.Conv2d | nn.Linear):
            ws.append(mod.weight.reshape(-1))
            if mod.bias is not None:
                assert torch.all(mod.bias == 0)
        elif isinstance(mod, nn.BatchNorm2d):
            assert torch.all(mod.weight == 1) and torch.all(mod.bias == 0)
    w = torch.cat(ws)
    assert abs(w.mean().item()) < 0.02 and abs(w.std().item() - 1) < 0.02


# -- Zen ------------------------------------------------------------------------------------------
def test_zen_grows_with_width() -> None:
    narrow = "SuperConvK3BNRELU(3,8,2,1)SuperResK3K3(8,8,2,8,2)SuperResK3K3(8,8,2,8,2)"
    wide = "SuperConvK3BNRELU(3,32,2,1)SuperResK3K3(32,32,2,32,2)SuperResK3K3(32,32,2,32,2)"
    for seed in (0, 1):
        zn = compute_torch_proxy("Zen", narrow, resolution=32, batch_size=B, seed=seed)
        zw = compute_torch_proxy("Zen", wide, resolution=32, batch_size=B, seed=seed)
        assert zw > zn + 1.0


def test_zen_matches_formula_single_draw() -> None:
    """Re-derive one Zen draw by hand from the documented procedure."""
    m = proxy_model(TINY)
    score = zen_score(m, resolution=R, batch_size=B, generator=torch.Generator().manual_seed(5))
    ref = proxy_model(TINY).train()
    g = torch.Generator().manual_seed(5)
    gaussian_reinit(ref, g)
    x = torch.randn(B, 3, R, R, generator=g)
    eps = torch.randn(B, 3, R, R, generator=g)
    with torch.no_grad():
        d = (ref.forward_pre_gap(x) - ref.forward_pre_gap(x + 0.01 * eps)).abs()
    bn = [m for m in ref.modules() if isinstance(m, nn.BatchNorm2d)]
    want = math.log(d.sum(dim=(1, 2, 3)).mean().item())
    want += sum(math.log(math.sqrt(b.running_var.mean().item())) for b in bn)
    assert score == pytest.approx(want, rel=1e-5)


def test_zen_repeat_averages_draws() -> None:
    one = compute_torch_proxy("Zen", TINY, resolution=R, batch_size=B, seed=3, repeat=1)
    three = compute_torch_proxy("Zen", TINY, resolution=R, batch_size=B, seed=3, repeat=3)
    assert math.isfinite(three) and three != one


# -- NASWOT ---------------------------------------------------------------------------------------
def test_naswot_kernel_hand_checked() -> None:
    # two samples, 3 units: they agree on 1 unit -> K = [[3, 1], [1, 3]], det = 8
    b = torch.tensor([[1, 0, 1], [1, 1, 0]], dtype=torch.bool)
    k = naswot_kernel([b])
    assert torch.equal(k, torch.tensor([[3.0, 1.0], [1.0, 3.0]], dtype=torch.float64))
    # a second layer of 2 units where they disagree on both: K += [[2, 0], [0, 2]]
    k2 = naswot_kernel([b, torch.tensor([[1, 0], [0, 1]])])
    assert torch.equal(k2, torch.tensor([[5.0, 1.0], [1.0, 5.0]], dtype=torch.float64))
    assert math.log(abs(torch.linalg.det(k2).item())) == pytest.approx(math.log(24.0))
    with pytest.raises(InputError):
        naswot_kernel([])


def test_naswot_two_sample_batch_matches_hamming_formula() -> None:
    m = proxy_model(TINY)
    score = naswot_score(m, resolution=R, batch_size=2, generator=torch.Generator().manual_seed(2))
    # replay the draw and count agreeing ReLU units by hand
    ref = proxy_model(TINY).train()
    g = torch.Generator().manual_seed(2)
    gaussian_reinit(ref, g)
    x = torch.randn(2, 3, R, R, generator=g)
    pats: list[torch.Tensor] = []
    hooks = [
        r.register_forward_hook(lambda _m, i, _o: pats.append(i[0].reshape(2, -1) > 0))
        for r in ref.modules()
        if isinstance(r, MasterReLU)
    ]
    with torch.no_grad():
        ref.forward_logits(x)
    for h in hooks:
        h.remove()
    assert len(pats) == len(list(ref.relus())) == 1 + 2 + 6 + 6 + 2
    n = sum(p.shape[1] for p in pats)
    hamming = sum(int((p[0] != p[1]).sum()) for p in pats)
    assert 0 < hamming < n
    want = math.log(n * n - (n - hamming) ** 2)
    assert score == pytest.approx(want, rel=1e-9)


# -- SynFlow / TE-NAS / GradNorm ------------------------------------------------------------------
def test_synflow_negated_and_model_untouched() -> None:
    m = proxy_model(TINY)
    g = torch.Generator().manual_seed(0)
    s = synflow_score(m, resolution=R, generator=g)
    assert s < 0  # the reference returns -score
    # the model keeps float32 and its signed weights (a float64 |θ| copy is scored)
    w = m.module_list[0].module_list[0].netblock.weight
    assert w.dtype == torch.float32 and (w < 0).any()
    # larger networks carry more synaptic flow -> more negative score
    wide = TINY.replace("(3,8,2,1)", "(3,16,2,1)").replace("(8,16,2,8,1)", "(16,16,2,16,1)")
    s_wide = compute_torch_proxy("SynFlow", wide, resolution=R, seed=0)
    s_tiny = compute_torch_proxy("SynFlow", TINY, resolution=R, seed=0)
    assert s_wide < s_tiny < 0


def test_synflow_hand_checked_without_batchnorm() -> None:
    """1x1 conv (3->4) + ReLU + GAP + fc(1000) on ones: L = Σ_k Σ_c |V_kc| a_c, a_c = Σ_i |W_ci|.

    fc term: mean over 1000 filters of Σ_c |V_kc| a_c = L / 1000; conv term: mean over 4 filters
    of a_c Σ_k |V_kc| = L / 4. SynFlow = −L (1/1000 + 1/4).
    """
    m = proxy_model("SuperConvK1BNRELU(3,4,1,1)")
    g = torch.Generator().manual_seed(0)
    s = synflow_score(m, resolution=8, generator=g, batchnorm="remove")
    w = m.module_list[0].module_list[0].netblock.weight.detach().abs().double().reshape(4, 3)
    v = m.fc_linear.netblock.weight.detach().abs().double()
    loss = float((v @ w.sum(1)).sum())
    assert s == pytest.approx(-loss * (1 / 1000 + 1 / 4), rel=1e-12)
    # reference mode: train-mode BN of a spatially constant map gives zero flow
    assert abs(synflow_score(m, resolution=8, generator=g)) < 1e-9 * abs(s)
    with pytest.raises(ConfigError):
        synflow_score(m, resolution=8, batchnorm="eval")  # type: ignore[arg-type]


def test_te_nas_is_negated_condition_number() -> None:
    m = proxy_model(TINY)
    s = te_nas_score(m, resolution=32, batch_size=B, generator=torch.Generator().manual_seed(0))
    assert s <= -1.0  # λ_max / λ_min >= 1


def test_gradnorm_positive() -> None:
    s = compute_torch_proxy("GradNorm", TINY, resolution=32, batch_size=B, seed=0)
    assert s > 0


def test_global_rng_when_unseeded() -> None:
    torch.manual_seed(11)
    a = compute_torch_proxy("NASWOT", TINY, resolution=32, batch_size=B)
    torch.manual_seed(11)
    b = compute_torch_proxy("NASWOT", TINY, resolution=32, batch_size=B)
    assert a == b and math.isfinite(a)
