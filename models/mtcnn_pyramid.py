"""The MTCNN cascade's image machinery: NMS, box arithmetic, the octave pyramid and its crops, fixed batches.

Conventions as in :mod:`models.mtcnn`: boxes are ``x1, y1, x2, y2`` float pixel edges; images are
``(N, 3, H, W)`` RGB, uint8 or float in [0, 255].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression.

    boxes: ``(K, 4)`` x1, y1, x2, y2 (edges). scores: ``(K,)``. mode: "union" (IoU) or "min"
    (intersection over the smaller area). Returns kept indices ``(M,) int64``, best score first;
    ties keep the lower index (stable sort), so the result is deterministic.
    """
    if mode not in ("union", "min"):
        raise ValueError(f"nms mode must be 'union' or 'min', got {mode!r}")
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    b = np.asarray(boxes, dtype=np.float64)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    area = np.maximum(x2 - x1, 0.0) * np.maximum(y2 - y1, 0.0)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0.0)
        ih = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0.0)
        inter = iw * ih
        if mode == "min":
            denom = np.minimum(area[i], area[rest])
        else:
            denom = area[i] + area[rest] - inter
        overlap = np.where(denom > 0, inter / np.maximum(denom, 1e-12), 0.0)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, threshold: float, mode: str = "union"
) -> np.ndarray:
    """NMS run independently per group id (e.g. frame index). Returns kept indices ``(M,) int64``, sorted."""
    keep = [
        np.flatnonzero(groups == g)[nms(boxes[groups == g], scores[groups == g], threshold, mode)]
        for g in np.unique(groups)
    ]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply MTCNN box regression: offsets ``(K, 4)`` are fractions of the box width/height."""
    w = (boxes[:, 2] - boxes[:, 0])[:, None]
    h = (boxes[:, 3] - boxes[:, 1])[:, None]
    return boxes + reg * np.concatenate([w, h, w, h], axis=1)


def square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box ``(K, 4)`` to a square of side max(w, h) about its centre."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    cx = boxes[:, 0] + 0.5 * w
    cy = boxes[:, 1] + 0.5 * h
    return np.stack([cx - 0.5 * side, cy - 0.5 * side, cx + 0.5 * side, cy + 0.5 * side], axis=1)


def resample(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` to ``size`` (h, w) with antialiased bilinear filtering (a triangle filter
    widened by the shrink factor, so shrinking averages like an area filter; growing is plain bilinear).

    uint8 input (fast path, best in channels_last memory) gives rounded uint8; float gives float.
    """
    return F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)


def normalise(x: torch.Tensor) -> torch.Tensor:
    """RGB ``(N, 3, H, W)`` uint8 or float in [0, 255] → float ``(x - 127.5) * 0.0078125``, channels_last
    (oneDNN's max-pooling is about 3x faster in that layout on CPU)."""
    x = x.float().contiguous(memory_format=torch.channels_last)
    return (x - 127.5) * 0.0078125


class OctavePyramid:
    """Frames at scales 1, 1/2, 1/4, ... (antialiased), the source of P-Net levels and of R/O-Net crops.

    images: ``(N, 3, H, W) uint8`` RGB (channels_last memory is fastest). ``min_side``: halving stops
    before the shorter side drops below it.
    """

    def __init__(self, images: torch.Tensor, min_side: int) -> None:
        self.height, self.width = images.shape[-2:]
        self.levels = [images.contiguous(memory_format=torch.channels_last)]
        while min(self.levels[-1].shape[-2:]) // 2 >= min_side:
            h, w = self.levels[-1].shape[-2:]
            self.levels.append(resample(self.levels[-1], ((h + 1) // 2, (w + 1) // 2)))

    def level_for(self, scale: float) -> int:
        """Index of the smallest level still at least ``scale`` times the full size."""
        best = 0
        for i, lvl in enumerate(self.levels):
            if lvl.shape[-1] >= scale * self.width and lvl.shape[-2] >= scale * self.height:
                best = i
        return best

    def resize(self, size: tuple[int, int]) -> torch.Tensor:
        """Frames resized to ``size`` (h, w): ``(N, 3, h, w) uint8``, filtered from the next finer level."""
        src = self.levels[self.level_for(max(size[0] / self.height, size[1] / self.width))]
        return resample(src, size)

    def crops(self, frame_of_box: np.ndarray, boxes: np.ndarray, size: int) -> torch.Tensor:
        """Bilinear crops of boxes, ``(K, 3, size, size) float32`` RGB in [0, 255].

        frame_of_box: ``(K,)`` frame index per box. boxes: ``(K, 4)`` edges in full-size pixels. Each box is
        sampled from the level where it spans between ``size`` and ``2 * size`` pixels (so bilinear
        sampling does not alias); outside the frame reads as zero (black), as in the original MTCNN.
        One ``grid_sample`` call per frame and level, on just the window its boxes cover, so a crop
        never depends on the other frames of the batch.
        """
        device = self.levels[0].device
        out = torch.zeros((len(boxes), 3, size, size), dtype=torch.float32, device=device)
        if len(boxes) == 0:
            return out
        side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        lvl_of_box = np.clip(np.floor(np.log2(np.maximum(side, 1e-6) / size)), 0, len(self.levels) - 1)
        steps = (np.arange(size, dtype=np.float64) + 0.5) / size  # sample centres as fractions of the box
        for lvl in np.unique(lvl_of_box).astype(int):
            level = self.levels[lvl]
            lh, lw = level.shape[-2:]
            in_level = lvl_of_box == lvl
            for frame in np.unique(frame_of_box[in_level]):
                sel = np.flatnonzero(in_level & (frame_of_box == frame))
                b = boxes[sel]
                # Sample positions as pixel indices of this level (pixel i has its centre at i).
                u = (b[:, 0:1] + steps * (b[:, 2:3] - b[:, 0:1])) * (lw / self.width) - 0.5  # (k, size)
                v = (b[:, 1:2] + steps * (b[:, 3:4] - b[:, 1:2])) * (lh / self.height) - 0.5  # (k, size)
                # Window holding both bilinear neighbours of every sample that lies inside the frame.
                x0 = min(max(int(np.floor(u.min())), 0), lw - 1)
                x1 = max(min(int(np.floor(u.max())) + 2, lw), x0 + 1)
                y0 = min(max(int(np.floor(v.min())), 0), lh - 1)
                y1 = max(min(int(np.floor(v.max())) + 2, lh), y0 + 1)
                src = level[frame : frame + 1, :, y0:y1, x0:x1].float()
                # grid_sample, align_corners=False: normalised = (index + 0.5) / extent * 2 - 1; samples
                # outside the window are outside the frame too, and read zero there.
                gx = (u - x0 + 0.5) * (2.0 / (x1 - x0)) - 1.0
                gy = (v - y0 + 0.5) * (2.0 / (y1 - y0)) - 1.0
                grid = np.stack(np.broadcast_arrays(gx[:, None, :], gy[:, :, None]), axis=-1)  # k,size,size,2
                g = torch.from_numpy(grid.astype(np.float32)).reshape(1, len(sel) * size, size, 2)
                res = F.grid_sample(src, g.to(device), "bilinear", "zeros", align_corners=False)
                idx = torch.from_numpy(sel).to(device)
                out[idx] = res[0].reshape(3, len(sel), size, size).permute(1, 0, 2, 3)
        return out


def run_in_chunks(net: nn.Module, x: torch.Tensor, chunk: int) -> tuple[torch.Tensor, ...]:
    """Run ``net`` on ``x`` in batches of exactly ``chunk`` (the last one zero-padded), concatenating outputs.

    oneDNN picks its kernels by tensor shape, so a sample's result depends on the batch size it ran in
    (by about 1e-6) but not on its position or on the other samples. A fixed batch size therefore makes
    every result independent of how frames were grouped into batches: bit-identical either way.
    """
    outs = []
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk]
        real = len(part)
        if real < chunk:
            pad = torch.zeros((chunk - real, *part.shape[1:]), dtype=part.dtype, device=part.device)
            part = torch.cat([part, pad]).contiguous(memory_format=torch.channels_last)
        outs.append(tuple(o[:real] for o in net(part)))
    return tuple(torch.cat(parts) for parts in zip(*outs))


def pyramid_scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """Scales of the image pyramid: a face of ``min_face_size`` px becomes P-Net's 12 px window at the
    first scale; each next scale multiplies by ``factor`` while the shorter side stays >= 12 px."""
    scales = []
    scale = 12.0 / min_face_size
    shortest = min(height, width) * scale
    while shortest >= 12.0:
        scales.append(scale)
        scale *= factor
        shortest *= factor
    return scales
