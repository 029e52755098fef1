"""The classic swap's colour and tone match: Lab transfer on skin, the target's shading, the sharpness.

Lab statistics and transfer, the skin weights they are taken on, the target's shading carried over, and the
frame's sharpness matched, with the Gaussian blurs they share.

No learned weights. Images are RGB in [0, 1] (``(3, H, W)`` tensors or ``(H, W, 3) float32`` arrays, as each
function says); weights ``(H, W)`` >= 0. Every function works on one face, so no result depends on a batch.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from stages.mask_geometry import hull_distance, hull_points
from stages.occluders import inter_ocular, luma

STD_RATIO = (0.5, 2.0)  # clamp of the per-channel std ratio in the colour transfer


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """``(3, H, W) float32`` RGB in [0, 1] (sRGB) → ``(3, H, W) float32`` CIE Lab (D65), L in [0, 100].

    OpenCV's conversion, the one :func:`shading_transfer` uses too, so the colour transfer's statistics
    and the shading split are in one Lab. It is 6-7x faster than kornia's on a 256 px crop here; the two
    differ by up to 0.5 in a and b (measured on random colours), below a visible colour difference.
    """
    hwc = np.ascontiguousarray(rgb.permute(1, 2, 0).numpy(), dtype=np.float32)
    return torch.from_numpy(cv2.cvtColor(hwc, cv2.COLOR_RGB2Lab)).permute(2, 0, 1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """``(3, H, W) float32`` CIE Lab (D65) → ``(3, H, W) float32`` sRGB, OpenCV's conversion."""
    hwc = np.ascontiguousarray(lab.permute(1, 2, 0).numpy(), dtype=np.float32)
    return torch.from_numpy(cv2.cvtColor(hwc, cv2.COLOR_Lab2RGB)).permute(2, 0, 1)


def lab_stats(
    image: torch.Tensor, weight: torch.Tensor, stride: int = 4, detail_sigma: float | None = None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Weighted per-channel CIE-Lab mean and std ``(3,), (3,)`` of ``image (3, H, W)`` RGB in [0, 1] inside
    ``weight (H, W) >= 0``, over every ``stride``-th pixel; None when the weights sum to less than 1.

    detail_sigma (px): the lightness std is taken of the detail finer than this scale only (lightness less
    its weighted local mean, :func:`masked_blur`): with the shading transfer on, that is all of the
    source's lightness that is pasted, and the light across the face (a lit cheek, a shadowed half) would
    otherwise count as contrast. Mean and a/b std are whole-band."""
    w = weight[::stride, ::stride].reshape(1, -1)
    total = w.sum()
    if float(total) < 1.0:
        return None
    grid = rgb_to_lab(image[:, ::stride, ::stride])
    lab = grid.reshape(3, -1)
    mu = (lab * w).sum(1) / total
    sd = torch.sqrt(((lab - mu[:, None]) ** 2 * w).sum(1) / total)
    if detail_sigma is not None and detail_sigma > 0:
        # the lightness the shading transfer keeps: less its weighted local mean at that scale (smooth at
        # many pixels, so taken on the same sparse grid)
        lightness = grid[0].numpy()[..., None]
        weights = np.ascontiguousarray(weight[::stride, ::stride].numpy(), dtype=np.float32)
        detail = lightness[..., 0] - masked_blur(lightness, weights, detail_sigma / stride)[..., 0]
        detail = torch.from_numpy(np.ascontiguousarray(detail)).reshape(1, -1)
        sd = torch.cat([torch.sqrt((detail**2 * w).sum(1) / total), sd[1:]])
    return mu, sd


def lab_transfer(
    src: torch.Tensor,
    dst: torch.Tensor,
    weight: torch.Tensor,
    stride: int = 4,
    target_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
    src_weight: torch.Tensor | None = None,
    skin_tone: torch.Tensor | None = None,
    detail_sigma: float | None = None,
) -> torch.Tensor:
    """Move ``src``'s per-channel Lab mean and std inside ``weight`` to those of ``dst`` (Reinhard transfer),
    with the a/b shift taken in proportion to each pixel's lightness against the skin's (all of it at the
    skin's lightness and above).

    src, dst: ``(3, H, W) float32`` RGB in [0, 1]. weight: ``(H, W)`` >= 0. The statistics use every
    ``stride``-th pixel. target_stats: use these ``(mean, std)`` instead of ``dst``'s own (temporally
    smoothed ones). src_weight: weights of ``src``'s statistics (its visible skin) when not ``weight``.
    skin_tone: ``(H, W)`` in [0, 1], where a and b become the target skin's mean (what the fill left of the
    source's glasses frames, and what it filled them with: not the face's colour, and a dark pixel given the
    whole shift took its complement, green at john_lennon_a's bridge and rims on may).
    detail_sigma: lightness contrast is matched on the detail finer than this (px; :func:`lab_stats`), for
    use with :func:`shading_transfer` at the same scale: the source's detail takes the frame's detail
    contrast, whatever light either face is in.
    Returns ``(3, H, W)`` RGB in [0, 1]. One face at a time, so the reductions never depend on the batch.

    Why scaled by lightness: a change of light moves a and b less in the dark (a colour cast scales the
    light, and a and b with it). With the whole shift everywhere, what is darker than the skin took the
    complement of the source light's colour: brown eyes and lips came out blue from a source under warm
    light onto a target under neutral light.
    """
    s_weight = weight if src_weight is None else src_weight
    s_stats = lab_stats(src, s_weight, stride, detail_sigma)
    d_stats = target_stats if target_stats is not None else lab_stats(dst, weight, stride, detail_sigma)
    if s_stats is None or d_stats is None:
        return src
    (mu_s, sd_s), (mu_d, sd_d) = s_stats, d_stats
    ratio = (sd_d / sd_s.clamp(min=1e-3)).clamp(*STD_RATIO)
    lab = rgb_to_lab(src)
    lightness = (lab[:1] - mu_s[0]) * ratio[0] + mu_d[0]
    share = (lab[:1] / mu_s[0].clamp(min=1e-3)).clamp(0.0, 1.0)
    shift = (mu_d[1:] - mu_s[1:] * ratio[1:])[:, None, None]
    ab = lab[1:] * ratio[1:, None, None] + shift * share
    if skin_tone is not None:
        ab = torch.lerp(ab, mu_d[1:, None, None].expand_as(ab), skin_tone[None])
    out = torch.cat([lightness, ab])
    return lab_to_rgb(out).clamp(0.0, 1.0)


# not skin: (landmarks, grown by this share of the eye distance): eyes, brows, lips, nostrils
SKIN_HOLES = (
    (np.arange(36, 42), 0.10),
    (np.arange(42, 48), 0.10),
    (np.arange(17, 22), 0.06),
    (np.arange(22, 27), 0.06),
    (np.arange(48, 60), 0.06),
    (np.arange(31, 36), 0.06),
)


def skin_weights(lm: np.ndarray, size: int) -> np.ndarray:
    """``(F, S, S) float32`` in {0, 1}: the face hull without eyes, brows, lips and nostrils (grown a little),
    where a face is bare skin. lm: ``(F, 68, 2)`` crop pixels."""
    lm = np.asarray(lm, dtype=np.float64)
    skin = (hull_distance(hull_points(lm), size) > 0).numpy().astype(np.uint8)
    for f in range(len(lm)):
        iod = inter_ocular(lm[f])
        for idx, grow in SKIN_HOLES:
            hole = np.zeros((size, size), np.uint8)
            cv2.fillPoly(hole, [np.round(lm[f, idx]).astype(np.int32)], 1)
            k = 2 * int(round(grow * iod)) + 1
            hole = cv2.dilate(hole, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
            skin[f] &= 1 - hole
    return skin.astype(np.float32)


def gauss(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (OpenCV, edges replicated) of ``(H, W)`` or ``(H, W, C) float32``; large sigmas at a
    quarter of the resolution (the result is smooth at that scale anyway)."""
    if sigma >= 6.0:
        h, w = image.shape[:2]
        small = cv2.resize(image, (max(1, w // 4), max(1, h // 4)), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigma / 4.0, borderType=cv2.BORDER_REPLICATE)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)


def masked_blur(x: np.ndarray, w: np.ndarray, sigma: float) -> np.ndarray:
    """Normalised Gaussian blur of ``x (H, W, C)`` over the weights ``w (H, W)``: the local weighted mean;
    where the weights around a pixel sum to almost nothing, the face's weighted mean. Sigmas of 6 px and
    more are computed at a quarter of the resolution and the (smooth) result is upsampled."""
    h, wd = w.shape
    xw = x * w[..., None]
    mean = xw.sum((0, 1)) / max(float(w.sum()), 1e-6)
    if sigma >= 6.0:
        size = (max(1, wd // 4), max(1, h // 4))
        xw = cv2.resize(xw, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], -1)
        w = cv2.resize(w, size, interpolation=cv2.INTER_AREA)
        sigma = sigma / 4.0
    num = cv2.GaussianBlur(xw, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE).reshape(xw.shape)
    den = cv2.GaussianBlur(w, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)[..., None]
    blend = np.clip(den / 0.05, 0.0, 1.0)  # trust the local mean once it has 5 % of a full kernel's weight
    base = blend * num / np.maximum(den, 1e-6) + (1.0 - blend) * mean
    if base.shape[:2] != (h, wd):
        base = cv2.resize(base.astype(np.float32), (wd, h), interpolation=cv2.INTER_LINEAR)
    return base.reshape(h, wd, -1)


def shading_transfer(
    src: np.ndarray, dst: np.ndarray, w_src: np.ndarray, w_dst: np.ndarray, sigma: float
) -> np.ndarray:
    """Keep ``src``'s detail and take ``dst``'s shading: in CIE Lab, ``src - base(src) + base(dst)`` with
    ``base`` the skin-weighted Gaussian mean of scale ``sigma`` px (:func:`masked_blur`).

    src, dst: ``(S, S, 3) float32`` RGB in [0, 1] in the same (target) geometry; w_src, w_dst: ``(S, S)``
    skin weights of each. The target's lighting, skin tone and its changes over the face (a lit cheek, a
    shadowed brow) carry over, so the pasted face meets the frame without a colour step and is not flat; the
    source's features, wrinkles and pores (everything finer than ``sigma``) stay. A two-band split: the
    Laplacian-pyramid blend of Burt & Adelson (1983) with one cut, made on skin only so the target's eyes,
    brows and mouth do not leak into the shading. Returns ``(S, S, 3) float32`` RGB in [0, 1].
    """
    lab_s = cv2.cvtColor(np.ascontiguousarray(src, dtype=np.float32), cv2.COLOR_RGB2Lab)
    lab_d = cv2.cvtColor(np.ascontiguousarray(dst, dtype=np.float32), cv2.COLOR_RGB2Lab)
    out = lab_s - masked_blur(lab_s, w_src, sigma) + masked_blur(lab_d, w_dst, sigma)
    return np.clip(cv2.cvtColor(out.astype(np.float32), cv2.COLOR_Lab2RGB), 0.0, 1.0)


DETAIL_SIGMAS = (0.0, 0.5, 0.8, 1.2, 1.7, 2.4, 3.4)  # px: blurs tried when matching the frame's sharpness


def detail_energy(gray: np.ndarray, w: np.ndarray) -> float:
    """RMS of the finest detail (``gray (H, W) float32`` in [0, 1] minus its 1 px Gaussian blur) over the
    weights ``w (H, W)``."""
    high = gray - cv2.GaussianBlur(gray, (0, 0), 1.0, borderType=cv2.BORDER_REPLICATE)
    return float(np.sqrt((high**2 * w).sum() / max(float(w.sum()), 1.0)))


def matching_blur(src: np.ndarray, dst: np.ndarray, w_src: np.ndarray, w_dst: np.ndarray) -> float:
    """Gaussian sigma (px) that brings the detail energy of ``src`` down to ``dst``'s (0 when the source is
    not sharper), interpolated between :data:`DETAIL_SIGMAS`. src, dst: ``(S, S, 3)`` RGB in [0, 1]."""
    goal = detail_energy(luma(dst), w_dst)
    gray = luma(src)
    energies = [detail_energy(gray if sg == 0 else gauss(gray, sg), w_src) for sg in DETAIL_SIGMAS]
    if energies[0] <= goal:
        return 0.0
    for k in range(1, len(DETAIL_SIGMAS)):
        if energies[k] <= goal:
            t = (energies[k - 1] - goal) / max(energies[k - 1] - energies[k], 1e-9)
            return DETAIL_SIGMAS[k - 1] + t * (DETAIL_SIGMAS[k] - DETAIL_SIGMAS[k - 1])
    return DETAIL_SIGMAS[-1]


def blur_image(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """``rgb (H, W, C) float32`` blurred by a Gaussian of ``sigma`` px (unchanged below 0.05)."""
    return rgb if sigma <= 0.05 else gauss(rgb, sigma)
