"""Training augmentation (reference spec §5.2)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from damofd.data.transforms import (
    CROP_CHOICE_DAMOFD_0_5G,
    CROP_CHOICE_DEFAULT,
    AugmentConfig,
    TrainTransform,
    crop_resize_image,
    hflip,
    normalize_image,
    photometric_distortion,
    random_square_crop,
    resize_annotations,
)
from damofd.errors import ConfigError


def _kps_for(boxes: np.ndarray) -> np.ndarray:
    """Five distinct keypoints inside each box, weight 1."""
    x1, y1, x2, y2 = (boxes[:, i : i + 1] for i in range(4))
    fx = np.array([0.3, 0.7, 0.5, 0.35, 0.65], np.float32)
    fy = np.array([0.35, 0.35, 0.55, 0.75, 0.75], np.float32)
    k = np.stack((x1 + fx * (x2 - x1), y1 + fy * (y2 - y1), np.ones((len(boxes), 5))), axis=-1)
    return k.astype(np.float32)


boxes_strategy = st.lists(
    st.tuples(st.floats(0, 600), st.floats(0, 400), st.floats(1, 200), st.floats(1, 200)),
    min_size=1,
    max_size=12,
).map(lambda r: np.array([[x, y, x + w, y + h] for x, y, w, h in r], np.float32))


@settings(max_examples=40, deadline=None)
@given(boxes=boxes_strategy, width=st.integers(32, 1000))
def test_flip_twice_is_identity_and_swaps_keypoints(boxes: np.ndarray, width: int) -> None:
    kps = _kps_for(boxes)
    ign = boxes[:1] + 1
    _, b1, k1, g1 = hflip(None, boxes, kps, ign, width)
    # box x-extent mirrored, y unchanged
    np.testing.assert_allclose(b1[:, 0], width - boxes[:, 2], rtol=0, atol=1e-3)
    np.testing.assert_allclose(b1[:, 2], width - boxes[:, 0], rtol=0, atol=1e-3)
    np.testing.assert_array_equal(b1[:, 1::2], boxes[:, 1::2])
    assert (b1[:, 2] >= b1[:, 0]).all()
    # left eye of the flipped face = mirrored right eye of the original, etc.
    for j, src in enumerate([1, 0, 2, 4, 3]):
        np.testing.assert_allclose(k1[:, j, 0], width - kps[:, src, 0], atol=1e-3)
        np.testing.assert_array_equal(k1[:, j, 1:], kps[:, src, 1:])
    _, b2, k2, g2 = hflip(None, b1, k1, g1, width)
    np.testing.assert_allclose(b2, boxes, atol=1e-3)
    np.testing.assert_allclose(k2, kps, atol=1e-3)
    np.testing.assert_allclose(g2, ign, atol=1e-3)


def test_flip_image_and_annotation_agree() -> None:
    img = np.zeros((20, 30, 3), np.float32)
    img[5:10, 2:6] = 255  # bright block at x in [2, 6)
    boxes = np.array([[2, 5, 6, 10]], np.float32)
    f_img, f_box, _, _ = hflip(img, boxes, _kps_for(boxes), np.zeros((0, 4), np.float32), 30)
    assert f_img is not None
    _, xs = np.nonzero(f_img[..., 0])
    assert (xs.min(), xs.max() + 1) == (int(f_box[0, 0]), int(f_box[0, 2]))


@settings(max_examples=60, deadline=None)
@given(
    rel=st.lists(
        st.tuples(
            st.floats(0.02, 0.98), st.floats(0.02, 0.98), st.floats(0.01, 0.6), st.floats(0.01, 0.6)
        ),
        min_size=1,
        max_size=12,
    ),
    w=st.integers(40, 900),
    h=st.integers(40, 700),
    clip=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_crop_keeps_exactly_the_boxes_with_centres_inside(
    rel: list[tuple[float, float, float, float]], w: int, h: int, clip: bool, seed: int
) -> None:
    # centres inside the image; boxes may extend past any border
    boxes = np.array(
        [[(x - bw / 2) * w, (y - bh / 2) * h, (x + bw / 2) * w, (y + bh / 2) * h]
         for x, y, bw, bh in rel],
        np.float32,
    )  # fmt: skip
    kps = _kps_for(boxes)
    kps[::2, :, 2] = 0  # mixed keypoint weights must travel with their boxes
    ign = boxes[::3] + 0.5
    res = random_square_crop((h, w), boxes, kps, ign, np.random.default_rng(seed), clip_border=clip)
    x1, y1, x2, y2 = res.patch
    assert x2 - x1 == y2 - y1 == max(int(res.scale * min(w, h)), 1)
    assert res.scale in CROP_CHOICE_DEFAULT
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    inside = (c[:, 0] > x1) & (c[:, 0] < x2) & (c[:, 1] > y1) & (c[:, 1] < y2)
    assert inside.any()  # a crop is accepted only with at least one centre inside
    expect = boxes[inside] - np.array([x1, y1, x1, y1], np.float32)
    if clip:
        expect = np.clip(expect, 0, x2 - x1)
    pos = (expect[:, 2] > expect[:, 0]) & (expect[:, 3] > expect[:, 1])
    np.testing.assert_allclose(res.bboxes, expect[pos], atol=1e-3)
    np.testing.assert_array_equal(res.index, np.flatnonzero(inside)[pos])
    # keypoints (and their weights) follow exactly the kept boxes (reference bug §10.10)
    assert len(res.keypoints) == len(res.bboxes)
    np.testing.assert_array_equal(res.keypoints[..., 2], kps[res.index][..., 2])
    ek = kps[res.index][..., :2] - np.array([x1, y1], np.float32)
    if clip:
        ek = np.clip(ek, 0, x2 - x1)
    np.testing.assert_allclose(res.keypoints[..., :2], ek, atol=1e-3)
    # ignore boxes follow the same centre rule
    ci = (ign[:, :2] + ign[:, 2:]) / 2
    ii = (ci[:, 0] > x1) & (ci[:, 0] < x2) & (ci[:, 1] > y1) & (ci[:, 1] < y2)
    np.testing.assert_array_equal(res.ignore_index, np.flatnonzero(ii))
    assert len(res.bboxes_ignore) == int(ii.sum())


def test_crop_offsets_cover_both_directions() -> None:
    boxes = np.array([[90, 40, 110, 60]], np.float32)  # centre (100, 50) in a 200x100 image
    rng = np.random.default_rng(0)
    lefts, seen_scales = set(), set()
    for _ in range(300):
        r = random_square_crop((100, 200), boxes, _kps_for(boxes), np.zeros((0, 4)), rng)
        lefts.add(r.patch[0] < 0)
        seen_scales.add(r.scale)
        assert 0 < r.patch[2] - r.patch[0] <= 200
        if r.scale > 2.0 - 1e-9:  # 200-px patch on a 200-px-wide image: left offset 0
            assert r.patch[0] == 0
    assert seen_scales == set(CROP_CHOICE_DEFAULT)
    assert lefts == {False}  # W > cw for every scale: offsets in [0, W - cw)
    tall = random_square_crop(
        (100, 60), np.array([[20, 40, 40, 60]], np.float32), np.zeros((1, 5, 3)),
        np.zeros((0, 4)), np.random.default_rng(3), crop_choice=(2.0,),
    )  # fmt: skip
    assert tall.patch[2] - tall.patch[0] == 120
    assert -60 <= tall.patch[0] < 0 and -20 <= tall.patch[1] < 0  # [W - cw, 0), [H - ch, 0)


def test_crop_without_boxes_terminates() -> None:
    r = random_square_crop(
        (50, 80), np.zeros((0, 4)), np.zeros((0, 5, 3)), np.array([[1, 1, 9, 9]]),
        np.random.default_rng(0), crop_choice=CROP_CHOICE_DAMOFD_0_5G,
    )  # fmt: skip
    assert r.bboxes.shape == (0, 4) and r.keypoints.shape == (0, 5, 3)
    # boxes whose centre is outside every possible patch: still terminates
    far = np.array([[5000, 5000, 5010, 5010]], np.float32)
    r = random_square_crop((50, 80), far, np.zeros((1, 5, 3)), np.zeros((0, 4)),
                           np.random.default_rng(0), max_tries=5)  # fmt: skip
    assert r.bboxes.shape == (0, 4)


def test_crop_resize_matches_reference_canvas() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    for patch in [(10, 5, 80, 75), (-30, -20, 150, 160), (60, -10, 160, 90), (0, 0, 90, 90)]:
        x1, y1, x2, y2 = patch
        # reference: float32 canvas filled with 128, paste the overlap, cv2.resize
        canvas = np.full((y2 - y1, x2 - x1, 3), 128, np.float32)
        fx1, fy1, fx2, fy2 = max(x1, 0), max(y1, 0), min(x2, 120), min(y2, 90)
        canvas[fy1 - y1 : fy2 - y1, fx1 - x1 : fx2 - x1] = img[fy1:fy2, fx1:fx2]
        ref = cv2.resize(canvas, (64, 64), interpolation=cv2.INTER_LINEAR)
        out = crop_resize_image(img, patch, 64)
        assert out.dtype == np.float32 and out.shape == (64, 64, 3)
        np.testing.assert_array_equal(out, ref)
    whole = crop_resize_image(img.astype(np.float32), (-10, -10, 54, 54), 64)
    assert whole[0, 0, 0] == 128 and whole[-1, -1, 0] == img[53, 53, 0]


def test_resize_scales_and_clips() -> None:
    b = np.array([[10, 20, 110, 230]], np.float32)
    k = np.array([[[5, 5, 1], [200, 100, 1], [50, 60, 0], [0, 0, 1], [199, 199, 1]]], np.float32)
    g = np.array([[0, 0, 50, 50]], np.float32)
    rb, rk, rg = resize_annotations(b, k, g, (200, 200), 640, clip_border=False)
    np.testing.assert_allclose(rb, b * 3.2, rtol=1e-6)
    np.testing.assert_allclose(rk[..., :2], k[..., :2] * 3.2, rtol=1e-6)
    np.testing.assert_array_equal(rk[..., 2], k[..., 2])  # weights untouched
    np.testing.assert_allclose(rg, g * 3.2, rtol=1e-6)
    cb, ck, _ = resize_annotations(b, k, g, (200, 200), 640, clip_border=True)
    assert cb.max() <= 640 and ck[..., :2].max() <= 640
    np.testing.assert_allclose(cb[0], [32, 64, 352, 640])


def test_normalize_is_rgb_chw() -> None:
    img = np.zeros((4, 5, 3), np.float32)
    img[..., 0], img[..., 1], img[..., 2] = 0.0, 127.5, 255.0  # B, G, R
    out = normalize_image(img)
    assert out.shape == (3, 4, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0, 0], [127.5 / 128, 0.0, -127.5 / 128])


class _ScriptedRng:
    """Deterministic stand-in for a Generator: integers() → 1, uniform() → the upper bound."""

    def __init__(self, coin: int, mode: int) -> None:
        self.coin, self.mode, self.calls = coin, mode, 0

    def integers(self, n: int) -> int:
        self.calls += 1
        return self.mode if self.calls == 2 else self.coin

    def uniform(self, lo: float, hi: float) -> float:
        return hi

    def permutation(self, n: int) -> np.ndarray:
        return np.array([2, 1, 0])


def test_photometric_semantics() -> None:
    rng = np.random.default_rng(0)
    img = rng.uniform(20, 200, (8, 8, 3)).astype(np.float32)
    cfg = AugmentConfig()
    # every coin 0 except mode: only the HSV round trip happens (near identity, no clipping)
    out = photometric_distortion(img.copy(), _ScriptedRng(coin=0, mode=0), cfg)
    np.testing.assert_allclose(out, img, atol=1e-3)
    # every coin 1, mode 1: brightness +32, contrast ×1.5 first, saturation ×1.5, hue +18°,
    # then channel permutation [2, 1, 0]
    out = photometric_distortion(img.copy(), _ScriptedRng(coin=1, mode=1), cfg)
    ref = (img + 32) * 1.5
    hsv = cv2.cvtColor(ref, cv2.COLOR_BGR2HSV)
    hsv[..., 1] *= 1.5
    hsv[..., 0] += 18
    hsv[..., 0][hsv[..., 0] > 360] -= 360
    ref = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[..., [2, 1, 0]]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-3)
    assert out.max() > 255  # no clipping, as mmdet
    with pytest.raises(TypeError):
        photometric_distortion(img.astype(np.uint8), rng, cfg)


def test_pipeline_seeded_and_exact_size() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (300, 420, 3), dtype=np.uint8)
    boxes = np.array([[50, 60, 120, 150], [200, 100, 260, 170], [300, 200, 330, 240]], np.float32)
    kps = _kps_for(boxes)
    t = TrainTransform(AugmentConfig(size=320))
    a = t(img, boxes, kps, np.zeros((0, 4), np.float32), np.random.default_rng(7))
    b = t(img, boxes, kps, np.zeros((0, 4), np.float32), np.random.default_rng(7))
    assert a.img.shape == (3, 320, 320) and a.img.dtype == np.float32
    np.testing.assert_array_equal(a.img, b.img)
    np.testing.assert_array_equal(a.bboxes, b.bboxes)
    assert (a.patch, a.flipped) == (b.patch, b.flipped)
    outs = {t(img, boxes, kps, np.zeros((0, 4)), np.random.default_rng(s)).patch for s in range(8)}
    assert len(outs) > 1
    # boxes stay consistent with the geometry: undo flip/resize/crop and compare
    for s in range(10):
        r = TrainTransform(AugmentConfig(size=320, photometric=False, clip_border=False))(
            img, boxes, kps, np.zeros((0, 4)), np.random.default_rng(s), normalize=False
        )
        x1, y1, x2, _ = r.patch
        f = (x2 - x1) / 320
        bb = r.bboxes.copy()
        if r.flipped:
            bb[:, [0, 2]] = 320 - bb[:, [2, 0]]
        orig = bb * f + np.array([x1, y1, x1, y1])
        for row in orig:
            assert np.abs(boxes - row).max(axis=1).min() < 1e-2


def test_config_validation_and_presets() -> None:
    assert AugmentConfig.for_model("damofd-0.5g").crop_choice == CROP_CHOICE_DAMOFD_0_5G
    assert AugmentConfig.for_model("damofd-0.5g").clip_border is True
    assert AugmentConfig.for_model("damofd-10g-kps").clip_border is False
    assert AugmentConfig.for_model("damofd-34g").clip_border is True
    assert AugmentConfig.for_model("scrfd-2.5g").crop_choice == CROP_CHOICE_DEFAULT
    assert AugmentConfig.for_model("scrfd-500m", flip_ratio=0.0).flip_ratio == 0.0
    with pytest.raises(ConfigError, match="no augmentation recipe"):
        AugmentConfig.for_model("yolo")
    for bad in ({"size": 100}, {"crop_choice": ()}, {"flip_ratio": 2.0}, {"max_crop_tries": 0}):
        with pytest.raises(ConfigError):
            AugmentConfig(**bad)  # type: ignore[arg-type]
