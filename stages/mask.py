"""Mask stage: decide, per pixel of each aligned crop, how much of the swapped face is pasted.

Placed after ``swap`` and before ``blend``, for every swap backend. The swap stage sets ``face.mask``
``(S, S) float32`` in [0, 1] (the landmark area: the face hull, eroded and feathered, with the target's own
inner mouth cut out). This stage replaces it by the product of the mask types listed in ``mask.types``, as
FaceFusion combines its face-mask types:

- ``box``: the whole crop with a feathered border (``mask.box_blur`` of the crop side); for learned
  backends that generate the whole crop.
- ``landmarks``: the swap stage's own mask (above).
- ``occlusion``: 0 where something covers the face (a microphone, hair, a hand of another colour), built
  from what ships, per frame: a robust colour model of the target's own skin, sampled in this crop on the
  cheeks and nose (inside the landmark hull, above the nose's base, away from eyes, brows and nostrils).
  A hull pixel is occluded when its YCrCb distance to that model is large (chroma weighted over luma, so
  shading is not an occluder) or when it is far darker than the skin (luma below ``DARK_RATIO`` of the
  skin's: a black microphone on a dim face has little chroma). Eyes, brows and nostrils are exempt; on
  the lips only a colourless dark counts (a microphone, not lipstick). The estimate is cleaned with a
  small opening and grown a little, so an occluder's edge stays original rather than painted over.
  Skin-coloured occluders (a hand) are not found this way; the ``region`` type is the stronger model.
  The target's hair or fringe reaching into the face from the outline and, with
  ``mask.target_glasses=keep``, its glasses (thin frames too) are occluders too (:mod:`stages.occluders`,
  the same maps the classic swap uses on the source photo).
- ``region``: the face-parsing BiSeNet's probability of the classes in ``mask.region_classes`` (needs the
  user-supplied ``79999_iter.pth``; a missing file is an error, never skipped).

Over time, per track, the occlusion/region/box part is filtered with an instant attack and a slow
release: ``m = min(m_t, r * m_prev + (1 - r) * m_t)`` with ``r = mask.release``, so an occluder is kept
from the first frame it appears in and the swap comes back over a few frames after it leaves (no
flicker at occluder edges). The filter restarts at scene cuts and where a track is missing a frame.

Every face's result depends only on its own inputs and its track's previous result, so the stage gives
the same masks in-process and under Ray, whatever the batching.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from stages.geometry import rescale_crop
from stages.mask_geometry import hull_distance, hull_points, polygon_distance, smooth_ramp
from stages.occluders import glasses_map, hair_map
from stages.scene import SceneCuts, TrackMemory
from stages.types import FaceRecord, FrameBatch, swap_groups

MASK_TYPES = ("box", "landmarks", "occlusion", "region")

LEFT_EYE, RIGHT_EYE = np.arange(36, 42), np.arange(42, 48)
LEFT_BROW, RIGHT_BROW = np.arange(17, 22), np.arange(22, 27)
NOSTRILS = np.r_[31:36, 33]  # nose base polyline 31-35 (closed through its middle point)
OUTER_LIP = np.arange(48, 60)

# Robust spread floors of the skin model, in YCrCb units of [0, 1]: a face of very even colour would
# otherwise flag ordinary shading and make-up. Luma counts ``LUMA_TOLERANCE`` times less than chroma.
MIN_SPREAD_CHROMA = 0.008
MIN_SPREAD_LUMA = 0.03
LUMA_TOLERANCE = 3.0
DARK_RATIO = 0.55  # luma below this share of the skin's median luma is an occluder (or a dark beard)
NEUTRAL_CHROMA = 0.04  # |Cr - 0.5| and |Cb - 0.5| below this: a colourless (grey/black) pixel
MIN_SKIN_SAMPLES = 50  # fewer skin pixels than this: no estimate, nothing is marked occluded


def max_filter(x: torch.Tensor, k: int) -> torch.Tensor:
    """Maximum over the k x k square (odd k, clipped at the border) around each pixel of ``(N, 1, H, W)``.

    OpenCV's dilation per image: exactly ``F.max_pool2d(x, k, 1, k // 2)`` (a maximum rounds nothing; the
    dilation's default border never wins), measured 20-60x faster than two 1-D ``max_pool2d`` passes on
    256 px crops here.
    """
    import cv2

    kernel = np.ones((k, k), np.uint8)
    planes = x.detach().to("cpu", torch.float32).numpy()
    out = (
        np.stack([cv2.dilate(np.ascontiguousarray(p[0]), kernel)[None] for p in planes])
        if len(planes)
        else planes
    )
    return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)


def box_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over the k x k square (odd k, clipped at the border) around each pixel of ``(N, 1, H, W)``.

    Two 1-D passes (the clipped square is a product of two clipped runs): ``F.avg_pool2d(x, k, 1, k // 2,
    count_include_pad=False)`` up to float rounding.
    """
    row = F.avg_pool2d(x, (1, k), 1, (0, k // 2), count_include_pad=False)
    return F.avg_pool2d(row, (k, 1), 1, (k // 2, 0), count_include_pad=False)


def _ycrcb(images: torch.Tensor) -> torch.Tensor:
    """``(F, 3, S, S)`` RGB in [0, 1] → ``(F, 3, S, S)`` Y, Cr, Cb in [0, 1] (BT.601, full range)."""
    r, g, b = images[:, 0], images[:, 1], images[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cr = (r - y) * 0.713 + 0.5
    cb = (b - y) * 0.564 + 0.5
    return torch.stack([y, cr, cb], 1)


def _near(lm: np.ndarray, idx: np.ndarray, size: int, grow: np.ndarray) -> torch.Tensor:
    """``(F, S, S) bool``: within ``grow (F,)`` px (per face) of, or inside, the polygon ``lm[:, idx]``."""
    g = torch.from_numpy(np.asarray(grow, dtype=np.float32))
    return polygon_distance(lm[:, idx], size, pad=float(g.max()) + 2.0) > -g[:, None, None]


def occlusion_masks(crops: np.ndarray, landmarks: np.ndarray, cfg: dict) -> torch.Tensor:
    """Visible-face masks ``(F, S, S) float32`` in [0, 1] (0 = occluded) of aligned target crops.

    crops: ``(F, S, S, 3) uint8`` RGB. landmarks: ``(F, 68, 2)`` in crop pixels. cfg ``mask``:
    occlusion_threshold (skin-model distance, in robust standard deviations, where occlusion starts; it is
    complete at 1.5 times that), occlusion_grow (px of the crop side, fraction, an occluder is grown by).
    """
    n = len(crops)
    size = crops.shape[1]
    m = cfg["mask"]
    lo = float(m["occlusion_threshold"])
    grow = max(1, int(round(float(m["occlusion_grow"]) * size)))
    lm = np.asarray(landmarks, dtype=np.float64)
    img = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div(255.0)
    ycc = _ycrcb(img)
    eye_dist = np.linalg.norm(lm[:, 36:42].mean(1) - lm[:, 42:48].mean(1), axis=1)
    feature_grow = 0.12 * eye_dist  # per face: a face's mask never depends on the others in its batch
    depth = hull_distance(hull_points(lm), size)
    hull = depth > 0
    exempt = (
        _near(lm, LEFT_EYE, size, feature_grow)
        | _near(lm, RIGHT_EYE, size, feature_grow)
        | _near(lm, LEFT_BROW, size, feature_grow)
        | _near(lm, RIGHT_BROW, size, feature_grow)
        | _near(lm, NOSTRILS, size, feature_grow)
    )
    lips = _near(lm, OUTER_LIP, size, feature_grow * 0.5)
    rows = torch.arange(size, dtype=torch.float32)[None, :, None]
    above_nose_base = rows < torch.from_numpy(lm[:, 33, 1].astype(np.float32))[:, None, None]
    sample = hull & above_nose_base & ~exempt & ~lips
    occluded = torch.zeros(n, size, size)
    for i in range(n):
        pix = ycc[i].reshape(3, -1)[:, sample[i].reshape(-1)]
        if pix.shape[1] < MIN_SKIN_SAMPLES:
            continue
        centre = pix.median(1).values
        spread = 1.4826 * (pix - centre[:, None]).abs().median(1).values
        spread = torch.maximum(spread, torch.tensor([MIN_SPREAD_LUMA, MIN_SPREAD_CHROMA, MIN_SPREAD_CHROMA]))
        spread[0] = spread[0] * LUMA_TOLERANCE
        z = (ycc[i] - centre[:, None, None]) / spread[:, None, None]
        dist = z.pow(2).sum(0).sqrt()
        colour = smooth_ramp((dist - lo) / (0.5 * lo)) * ~lips[i]  # lips are not skin-coloured
        # far darker than the skin in any light (a black microphone on a dimly lit face has little chroma)
        dark_below = DARK_RATIO * centre[0]
        dark = smooth_ramp((dark_below - ycc[i, 0]) / (0.25 * dark_below).clamp_min(1e-3))
        # on the lips only a colourless dark counts (a black microphone, not dark red lipstick)
        chroma = torch.maximum((ycc[i, 1] - 0.5).abs(), (ycc[i, 2] - 0.5).abs())
        dark = torch.where(
            lips[i], dark * smooth_ramp((NEUTRAL_CHROMA - chroma) / (0.5 * NEUTRAL_CHROMA)), dark
        )
        occluded[i] = torch.maximum(colour, dark) * (hull[i] & ~exempt[i])
    # opening (drop isolated speckles), then grow what is left so occluder edges stay original
    k = 2 * (grow // 2) + 1
    opened = max_filter(-max_filter(-occluded[:, None], 5), 5)
    # the target's own glasses frames (thin ones, which the opening would remove, too) and its hair or
    # fringe reaching into the face (stages/occluders.py): the target's, kept whole
    keep_glasses = m.get("target_glasses", "keep") == "keep"
    for i in range(n):
        hair = hair_map(crops[i], lm[i], depth[i].numpy())
        if keep_glasses:
            frames, lenses, _ = glasses_map(crops[i], lm[i], hair)
            hair = np.maximum(hair, np.maximum(frames, lenses))
        opened[i, 0] = torch.maximum(opened[i, 0], torch.from_numpy(hair))
    grown = max_filter(opened, k)
    soft = box_mean(grown, k)
    return (1.0 - torch.maximum(soft, opened))[:, 0].clamp(0.0, 1.0)


def box_masks(n: int, size: int, blur: float) -> torch.Tensor:
    """``(n, S, S) float32``: 1 inside the crop, ramping to 0 over ``blur`` × S at its border."""
    width = max(blur * size, 1.0)
    pos = torch.arange(size, dtype=torch.float32)
    edge = torch.minimum(pos + 0.5, size - 0.5 - pos)
    ramp = smooth_ramp(edge / width)
    return (ramp[:, None] * ramp[None, :]).expand(n, size, size).contiguous()


class MaskStage:
    """Combine the configured mask types into every swapped face's ``mask`` (see the module docstring).

    Needs faces with ``crop``, ``swapped``, ``mask``, ``affine`` and ``landmarks68`` (set by align and swap).
    cfg ``mask``: types (list of ``box | landmarks | occlusion | region``), box_blur, occlusion_threshold,
    occlusion_grow, region_classes (face-parsing class names), release (temporal filter, 0 = off).
    """

    def __init__(self, cfg: dict) -> None:
        m = cfg["mask"]
        self.types = tuple(m["types"])
        unknown = [t for t in self.types if t not in MASK_TYPES]
        if not self.types or unknown:
            from models.errors import ConfigError

            raise ConfigError(f"mask.types={list(self.types)!r}: give one or more of {', '.join(MASK_TYPES)}")
        self.cfg = cfg
        self.release = float(m["release"])
        self.scene = SceneCuts(cfg)
        self._previous = TrackMemory()  # (frame, (S, S) float32 occlusion mask) per track
        self.parser = None
        self.region_ids: list[int] = []
        if "region" in self.types:
            from models.bisenet import FACE_PARSING_CLASSES
            from models.runtime import resolve_device
            from models.weights import load_configured

            names = list(m["region_classes"])
            bad = [c for c in names if c not in FACE_PARSING_CLASSES]
            if bad or not names:
                from models.errors import ConfigError

                known = ", ".join(FACE_PARSING_CLASSES)
                raise ConfigError(f"mask.region_classes: {', '.join(bad) or 'empty'} not among {known}")
            self.region_ids = [FACE_PARSING_CLASSES.index(c) for c in names]
            self.device = resolve_device(cfg["runtime"]["device"])
            self.parser = load_configured("face_parser_bisenet", cfg, device=self.device)

    def _region(self, crops: np.ndarray) -> torch.Tensor:
        from models.bisenet import class_mask, parse_faces

        x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div(255.0)
        probs = parse_faces(self.parser, x.to(self.device))
        return class_mask(probs, self.region_ids)[:, 0].float().cpu()

    def masks(self, faces: list[FaceRecord], crops: np.ndarray, landmarks: np.ndarray) -> torch.Tensor:
        """The per-frame masks ``(F, S, S) float32`` of the non-landmark types (1 when there are none);
        crops ``(F, S, S, 3) uint8`` RGB of one side S."""
        n, size = len(faces), int(crops.shape[1])
        out = torch.ones(n, size, size)
        if "box" in self.types:
            out = out * box_masks(n, size, float(self.cfg["mask"]["box_blur"]))
        if "occlusion" in self.types:
            out = out * occlusion_masks(crops, landmarks, self.cfg)
        if "region" in self.types:
            out = out * self._region(crops)
        return out

    def __call__(self, batch: FrameBatch) -> FrameBatch:
        if len(batch) == 0:
            return batch
        cuts = self.scene.of(batch)
        frame_of = {id(f): int(batch.indices[i]) for i, fs in enumerate(batch.faces) for f in fs}
        cut_at = {int(batch.indices[i]) for i in np.flatnonzero(cuts)}
        for faces, crops, landmarks in swap_groups(batch):  # in the order that keeps tracks in frame order
            keep = [i for i, f in enumerate(faces) if f.swapped is not None]
            if not keep:
                continue
            todo = [faces[i] for i in keep]
            extra = self.masks(todo, crops[keep], landmarks[keep])
            for face, m in zip(todo, extra):
                frame = frame_of[id(face)]
                prev = self._previous.previous(batch.video_id, face.track_id, frame, frame in cut_at)
                if self.release > 0 and prev is not None:
                    if prev.shape != m.shape:  # the track's crop side changed: the same cut, scaled
                        prev = rescale_crop(prev, m.shape[-1])
                    m = torch.minimum(m, self.release * prev + (1.0 - self.release) * m)
                self._previous.store(batch.video_id, face.track_id, frame, m)
                base = face.mask if "landmarks" in self.types and face.mask is not None else 1.0
                paste = np.asarray(base, dtype=np.float32) * m.numpy()
                face.mask = np.ascontiguousarray(paste, dtype=np.float32)
        self._previous.forget_before(batch.video_id, int(batch.indices[0]))
        return batch

    def flush(self) -> list[FrameBatch]:
        self._previous.clear()
        return []
