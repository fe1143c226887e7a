"""SCRFD / DamoFD training augmentation (reference spec §5.2), numpy + OpenCV, seeded.

Per image: :func:`random_square_crop` → resize to exactly ``size``×``size`` → horizontal flip
(p = ``flip_ratio``) → :func:`photometric_distortion` → BGR→RGB and ``(x − 127.5)/128``.
Every random draw comes from the ``numpy.random.Generator`` passed in, so a sample is a pure
function of (image, annotation, generator state).

Formats: images are ``(H, W, 3)`` BGR (uint8 as decoded, float32 from the crop on, as the
reference loads with ``to_float32=True``); boxes ``(N, 4)`` float32 ``xyxy`` pixels (no +1);
keypoints ``(N, 5, 3)`` float32 ``(x, y, weight)``; ignore boxes ``(K, 4)``.

Differences from the reference ``RandomSquareCrop`` (documented, deliberate):

* Bug §10.10 fixed: the reference filters boxes and keypoints by "centre inside" *and* "positive
  size" but labels by "centre inside" only, so the two can disagree. Here one index set selects
  boxes, keypoints (and anything else attached to a box).
* A box is kept when its clipped/shifted width and height are > 0 (spec wording); the reference
  tests ``w + 1 > 0``, which only differs for zero-area or inverted annotation boxes.
* An image without (non-ignored) boxes would make the reference loop forever; here the first
  drawn patch is accepted. After 100 failed scale rounds (boxes whose centres can never be in a
  patch) the last patch is accepted too.
* The 250 offset tries of one scale are drawn at once (vectorised), so the random stream differs
  from sequential ``np.random`` calls; the distribution is the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from damofd.data.labelv2 import KEYPOINT_FLIP_ORDER, NUM_KEYPOINTS
from damofd.errors import ConfigError

__all__ = [
    "CROP_CHOICE_DAMOFD_0_5G",
    "CROP_CHOICE_DEFAULT",
    "AugmentConfig",
    "CropResult",
    "TrainSample",
    "TrainTransform",
    "crop_resize_image",
    "hflip",
    "normalize_image",
    "photometric_distortion",
    "random_square_crop",
    "resize_annotations",
]

CROP_CHOICE_DEFAULT: tuple[float, ...] = (0.3, 0.45, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0)
CROP_CHOICE_DAMOFD_0_5G: tuple[float, ...] = (1.0, 1.2, 1.4, 1.6, 1.8, 2.0)
IMG_MEAN = 127.5
IMG_STD = 128.0
_MAX_SCALE_ROUNDS = 100

# bbox_clip_border per zoo model (reference spec §5.2 and scrfd-spec §4); "-kps" is stripped.
_CLIP_BORDER = {
    "damofd-0.5g": True,
    "damofd-2.5g": False,
    "damofd-10g": False,
    "damofd-34g": True,
    "scrfd-500m": True,
    "scrfd-1g": True,
    "scrfd-1.3g": False,
    "scrfd-2.5g": False,
    "scrfd-10g": False,
    "scrfd-34g": True,
}


@dataclass(frozen=True)
class AugmentConfig:
    """Typed configuration of the training augmentation.

    Attributes:
        size: output side in pixels (the crop is resized to ``size``×``size``).
        crop_choice: crop side as a multiple of the image's short side, drawn uniformly.
        clip_border: clip boxes and keypoints to the crop and to the resized image
            (mmdet ``bbox_clip_border``).
        flip_ratio: probability of a horizontal flip.
        photometric: apply PhotoMetricDistortion.
        brightness_delta, contrast_range, saturation_range, hue_delta: its parameters
            (hue in degrees).
        crop_fill: pixel value of crop regions outside the image (BGR, before normalisation).
        max_crop_tries: offset tries per drawn scale.
    """

    size: int = 640
    crop_choice: tuple[float, ...] = CROP_CHOICE_DEFAULT
    clip_border: bool = True
    flip_ratio: float = 0.5
    photometric: bool = True
    brightness_delta: float = 32.0
    contrast_range: tuple[float, float] = (0.5, 1.5)
    saturation_range: tuple[float, float] = (0.5, 1.5)
    hue_delta: float = 18.0
    crop_fill: float = 128.0
    max_crop_tries: int = 250

    def __post_init__(self) -> None:
        if self.size <= 0 or self.size % 32:
            raise ConfigError(f"AugmentConfig.size must be a positive multiple of 32: {self.size}")
        if not self.crop_choice or any(not (c > 0) for c in self.crop_choice):
            raise ConfigError(f"AugmentConfig.crop_choice must be positive: {self.crop_choice}")
        if not 0.0 <= self.flip_ratio <= 1.0:
            raise ConfigError(f"AugmentConfig.flip_ratio must be in [0, 1]: {self.flip_ratio}")
        if self.max_crop_tries < 1:
            raise ConfigError("AugmentConfig.max_crop_tries must be >= 1")
        for name in ("contrast_range", "saturation_range"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ConfigError(f"AugmentConfig.{name} must satisfy 0 <= low <= high")

    @classmethod
    def for_model(cls, name: str, **overrides: object) -> AugmentConfig:
        """The reference recipe of a zoo model (``damofd-0.5g`` … ``scrfd-34g``, ``-kps`` ok).

        DamoFD-0.5G crops with ``(1.0 … 2.0)``, every other model with :data:`CROP_CHOICE_DEFAULT`;
        ``clip_border`` is False for DamoFD-2.5G/10G and SCRFD-1.3G/2.5G/10G.
        """
        key = name.lower().removesuffix("-bnkps").removesuffix("-kps")
        if key not in _CLIP_BORDER:
            raise ConfigError(
                f"no augmentation recipe for model {name!r}; known: {', '.join(_CLIP_BORDER)}"
            )
        crop = CROP_CHOICE_DAMOFD_0_5G if key == "damofd-0.5g" else CROP_CHOICE_DEFAULT
        kwargs: dict[str, object] = {"crop_choice": crop, "clip_border": _CLIP_BORDER[key]}
        kwargs.update(overrides)
        return cls(**kwargs)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# RandomSquareCrop


@dataclass(frozen=True)
class CropResult:
    """Outcome of :func:`random_square_crop` (coordinates relative to the patch origin).

    ``patch`` is ``(x1, y1, x2, y2)`` integer pixels of the original image (may extend outside
    it); ``index`` / ``ignore_index`` are the input rows kept, in input order.
    """

    patch: tuple[int, int, int, int]
    scale: float
    bboxes: np.ndarray
    keypoints: np.ndarray
    bboxes_ignore: np.ndarray
    index: np.ndarray
    ignore_index: np.ndarray


def _centres_inside(boxes: np.ndarray, patch: np.ndarray) -> np.ndarray:
    """(T, N) bool: centre of each box strictly inside each of T patches (T, 4)."""
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    return (
        (c[None, :, 0] > patch[:, None, 0])
        & (c[None, :, 1] > patch[:, None, 1])
        & (c[None, :, 0] < patch[:, None, 2])
        & (c[None, :, 1] < patch[:, None, 3])
    )


def _offsets(rng: np.random.Generator, full: int, side: int, n: int) -> np.ndarray:
    if full == side:
        return np.zeros(n, dtype=np.int64)
    if full > side:
        return rng.integers(0, full - side, size=n)
    return rng.integers(full - side, 0, size=n)


def _apply_patch(boxes: np.ndarray, patch: np.ndarray, clip: bool) -> tuple[np.ndarray, np.ndarray]:
    """Keep boxes whose centre is inside ``patch``, clip, shift; drop non-positive sizes."""
    if boxes.shape[0] == 0:
        return boxes.reshape(0, 4).astype(np.float32), np.zeros(0, dtype=np.int64)
    inside = np.flatnonzero(_centres_inside(boxes, patch[None])[0])
    b = boxes[inside].astype(np.float32, copy=True)
    if clip:
        b[:, 2:] = np.minimum(b[:, 2:], patch[2:].astype(np.float32))
        b[:, :2] = np.maximum(b[:, :2], patch[:2].astype(np.float32))
    b -= np.tile(patch[:2], 2).astype(np.float32)
    ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    return b[ok], inside[ok]


def random_square_crop(
    img_hw: tuple[int, int],
    bboxes: np.ndarray,
    keypoints: np.ndarray,
    bboxes_ignore: np.ndarray,
    rng: np.random.Generator,
    *,
    crop_choice: tuple[float, ...] = CROP_CHOICE_DEFAULT,
    clip_border: bool = True,
    max_tries: int = 250,
) -> CropResult:
    """Choose a square patch and crop the annotations to it (reference ``RandomSquareCrop``).

    Draw ``scale`` from ``crop_choice`` (or ×1.2 after a failed round when all choices are
    <= 1), side ``cw = int(scale · min(W, H))``, offsets uniform in ``[0, W − cw)`` (or
    ``[W − cw, 0)`` when the patch is larger than the image); accept the first patch containing
    the centre of at least one box (strictly). Boxes (and their keypoints) with the centre inside
    are kept, clipped to the patch when ``clip_border``, shifted to the patch origin, and
    dropped when their width or height is not positive. Ignore boxes follow the same rules.
    """
    h, w = int(img_hw[0]), int(img_hw[1])
    boxes = np.asarray(bboxes, dtype=np.float32).reshape(-1, 4)
    kps = np.asarray(keypoints, dtype=np.float32).reshape(-1, NUM_KEYPOINTS, 3)
    ign = np.asarray(bboxes_ignore, dtype=np.float32).reshape(-1, 4)
    choices = np.asarray(crop_choice, dtype=np.float64)
    max_scale = float(choices.max())
    short = min(w, h)
    scale = float(choices[0])
    patch = np.zeros(4, dtype=np.int64)
    for rnd in range(_MAX_SCALE_ROUNDS):
        if rnd == 0 or max_scale > 1.0:
            scale = float(rng.choice(choices))
        else:
            scale *= 1.2
        cw = max(int(scale * short), 1)
        lefts = _offsets(rng, w, cw, max_tries)
        tops = _offsets(rng, h, cw, max_tries)
        patches = np.stack((lefts, tops, lefts + cw, tops + cw), axis=1)
        if boxes.shape[0] == 0:
            patch = patches[0]
            break
        hit = _centres_inside(boxes, patches).any(axis=1)
        patch = patches[-1]
        if hit.any():
            patch = patches[int(np.argmax(hit))]
            break
    out_boxes, index = _apply_patch(boxes, patch, clip_border)
    out_kps = kps[index].copy()
    if clip_border and out_kps.shape[0]:
        out_kps[..., 0] = np.clip(out_kps[..., 0], patch[0], patch[2])
        out_kps[..., 1] = np.clip(out_kps[..., 1], patch[1], patch[3])
    out_kps[..., 0] -= patch[0]
    out_kps[..., 1] -= patch[1]
    out_ign, ign_index = _apply_patch(ign, patch, clip_border)
    return CropResult(
        patch=tuple(int(v) for v in patch),  # type: ignore[arg-type]
        scale=scale,
        bboxes=out_boxes,
        keypoints=out_kps,
        bboxes_ignore=out_ign,
        index=index,
        ignore_index=ign_index,
    )


def crop_resize_image(
    img: np.ndarray, patch: tuple[int, int, int, int], size: int, fill: float = 128.0
) -> np.ndarray:
    """Cut ``patch`` (may extend outside ``img``; filled with ``fill``) and resize it bilinearly
    to ``size``×``size``. Returns float32 ``(size, size, 3)``.

    Identical to the reference (float32 canvas filled with ``fill``, then ``cv2.resize``
    INTER_LINEAR), but only the part of the image inside the patch is converted to float.
    """
    x1, y1, x2, y2 = (int(v) for v in patch)
    h, w = img.shape[:2]
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if (sx1, sy1, sx2, sy2) == (x1, y1, x2, y2):
        canvas = img[y1:y2, x1:x2].astype(np.float32)
    else:
        canvas = np.empty((y2 - y1, x2 - x1, 3), dtype=np.float32)
        if sx2 <= sx1 or sy2 <= sy1:
            canvas.fill(fill)
        else:
            ox, oy = sx1 - x1, sy1 - y1
            rw, rh = sx2 - sx1, sy2 - sy1
            # fill only the margins, then copy (and convert) the image part in one pass
            canvas[:oy].fill(fill)
            canvas[oy + rh :].fill(fill)
            canvas[oy : oy + rh, :ox].fill(fill)
            canvas[oy : oy + rh, ox + rw :].fill(fill)
            canvas[oy : oy + rh, ox : ox + rw] = img[sy1:sy2, sx1:sx2]
    if canvas.shape[0] == size and canvas.shape[1] == size:
        return np.ascontiguousarray(canvas)
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_LINEAR)


def resize_annotations(
    bboxes: np.ndarray,
    keypoints: np.ndarray,
    bboxes_ignore: np.ndarray,
    src_hw: tuple[int, int],
    size: int,
    clip_border: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale annotations of a ``src_hw`` image resized to ``size``×``size`` (mmdet ``Resize``
    with ``keep_ratio=False``): ``x·size/W``, ``y·size/H``; clipped to [0, size] when
    ``clip_border``. Keypoint weights are untouched."""
    sx = np.float32(size / src_hw[1])
    sy = np.float32(size / src_hw[0])
    f = np.array([sx, sy, sx, sy], dtype=np.float32)
    b = bboxes.astype(np.float32) * f
    g = bboxes_ignore.astype(np.float32) * f
    k = keypoints.astype(np.float32, copy=True)
    k[..., 0] *= sx
    k[..., 1] *= sy
    if clip_border:
        for arr in (b, g):
            np.clip(arr, 0, size, out=arr)
        k[..., :2] = np.clip(k[..., :2], 0, size)
    return b, k, g


def hflip(
    img: np.ndarray | None,
    bboxes: np.ndarray,
    keypoints: np.ndarray,
    bboxes_ignore: np.ndarray,
    width: int,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal flip of an image of ``width`` pixels: ``x1' = W − x2``, ``x2' = W − x1``;
    keypoints ``x' = W − x`` then reordered by :data:`KEYPOINT_FLIP_ORDER` (left/right eye and
    mouth corners swap). ``img`` may be ``None`` (annotations only)."""
    out_img = None if img is None else cv2.flip(img, 1)
    W = np.float32(width)

    def flip_boxes(b: np.ndarray) -> np.ndarray:
        f = b.copy()
        f[:, 0] = W - b[:, 2]
        f[:, 2] = W - b[:, 0]
        return f

    k = keypoints[:, list(KEYPOINT_FLIP_ORDER), :].copy()
    k[..., 0] = W - k[..., 0]
    return out_img, flip_boxes(bboxes), k, flip_boxes(bboxes_ignore)


def photometric_distortion(
    img: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig
) -> np.ndarray:
    """mmdet ``PhotoMetricDistortion`` on a float32 BGR image (modified in place and returned).

    In order, each with p = 0.5: brightness ``+U(−δ, δ)``; contrast ``×U(lo, hi)`` either here
    or after the HSV step (p 0.5 each); saturation ``×U``; hue ``+U(−18°, 18°)`` wrapped to
    [0, 360]; then a random channel permutation (p 0.5). HSV conversions use OpenCV on float32
    (H in degrees, S in [0, 1] for non-negative input), no clipping anywhere, as the reference.
    """
    if img.dtype != np.float32:
        raise TypeError(f"photometric_distortion needs a float32 image, got {img.dtype}")
    if rng.integers(2):
        img += np.float32(rng.uniform(-cfg.brightness_delta, cfg.brightness_delta))
    mode = int(rng.integers(2))
    if mode == 1 and rng.integers(2):
        img *= np.float32(rng.uniform(*cfg.contrast_range))
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    if rng.integers(2):
        hsv[..., 1] *= np.float32(rng.uniform(*cfg.saturation_range))
    if rng.integers(2):
        hue = hsv[..., 0]
        hue += np.float32(rng.uniform(-cfg.hue_delta, cfg.hue_delta))
        hue[hue > 360] -= 360
        hue[hue < 0] += 360
    img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if mode == 0 and rng.integers(2):
        img *= np.float32(rng.uniform(*cfg.contrast_range))
    if rng.integers(2):
        planes = cv2.split(img)
        img = cv2.merge([planes[i] for i in rng.permutation(3)])
    return img


def normalize_image(img: np.ndarray) -> np.ndarray:
    """BGR ``(H, W, 3)`` → RGB ``(3, H, W)`` float32 ``(x − 127.5) / 128``."""
    h, w = img.shape[:2]
    out = np.empty((3, h, w), dtype=np.float32)
    for c, plane in enumerate(reversed(cv2.split(img))):
        out[c] = plane
    out -= np.float32(IMG_MEAN)
    out *= np.float32(1.0 / IMG_STD)
    return out


@dataclass
class TrainSample:
    """One augmented sample.

    ``img``: ``(3, S, S)`` float32 RGB normalised, or ``(S, S, 3)`` float32 BGR pixel values
    when the transform ran with ``normalize=False``. Boxes/keypoints are in pixels of the
    ``S``×``S`` image. ``patch``: crop window in original pixels; ``flipped``: flip applied.
    """

    img: np.ndarray
    bboxes: np.ndarray
    keypoints: np.ndarray
    bboxes_ignore: np.ndarray
    patch: tuple[int, int, int, int]
    flipped: bool


class TrainTransform:
    """The full training pipeline of spec §5.2, configured by an :class:`AugmentConfig`."""

    def __init__(self, config: AugmentConfig | None = None) -> None:
        self.config = config or AugmentConfig()

    def __call__(
        self,
        img: np.ndarray,
        bboxes: np.ndarray,
        keypoints: np.ndarray,
        bboxes_ignore: np.ndarray,
        rng: np.random.Generator,
        *,
        normalize: bool = True,
    ) -> TrainSample:
        """Augment one image. ``img`` is ``(H, W, 3)`` BGR (uint8 or float32); annotations in
        its pixels (boxes xyxy, keypoints ``(x, y, weight)``)."""
        cfg = self.config
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) BGR image, got shape {img.shape}")
        crop = random_square_crop(
            img.shape[:2],
            bboxes,
            keypoints,
            bboxes_ignore,
            rng,
            crop_choice=cfg.crop_choice,
            clip_border=cfg.clip_border,
            max_tries=cfg.max_crop_tries,
        )
        x1, y1, x2, y2 = crop.patch
        out = crop_resize_image(img, crop.patch, cfg.size, cfg.crop_fill)
        b, k, g = resize_annotations(
            crop.bboxes,
            crop.keypoints,
            crop.bboxes_ignore,
            (y2 - y1, x2 - x1),
            cfg.size,
            cfg.clip_border,
        )
        flipped = bool(rng.random() < cfg.flip_ratio) if cfg.flip_ratio > 0 else False
        if flipped:
            out, b, k, g = hflip(out, b, k, g, cfg.size)  # type: ignore[assignment]
        assert out is not None
        if cfg.photometric:
            out = photometric_distortion(out, rng, cfg)
        if normalize:
            out = normalize_image(out)
        return TrainSample(out, b, k, g, crop.patch, flipped)
