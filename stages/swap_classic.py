"""Classic swap stage: one source face on every selected face by landmark warp, colour match, soft mask.

The method is described below; its parts live in :mod:`stages.source_face`, :mod:`stages.face_warp` and
:mod:`stages.colour_match`.

No learned weights. For every selected face of a batch (aligned crop + 68 landmarks set by the align stage)
the source face (its one-sided light evened out, :func:`stages.source_face.even_light`) is warped onto the
target's landmark geometry (with the source's nose, eye and brow shape, smoothed along the track; where a
turned photo's far half would be stretched, its near half mirrored, :func:`stages.face_warp.mirror_weight`),
colour-matched to the target's skin in CIE Lab, given the target's shading and sharpness, and given a soft
mask that covers the face hull (jaw line and lifted brows), eroded and feathered, with a hole over the
target's own open mouth.

Only the source's face is pasted (:mod:`stages.occluders`; ``classic.source_hair`` /
``classic.source_glasses``): its glasses frames are filled from the skin around them (they are thin, and
the eyes behind clear lenses are the source's); its hair, hat or fringe reaching into the hull and dark
lenses form an occluder map of the source crop, warped with its texture. Where the source is hidden the
paste mask is taken down, so the target's own skin shows there (it has the target's shading and texture;
inpainting a whole hidden forehead gave a smeared, flat patch), and the colour match measures the source on
its visible skin only.

Every result depends only on that face's own inputs: the batched steps are element-wise (their values do
not depend on which other faces share the batch) and every reduction runs per face, so the outputs are
bit-identical whatever the batch composition. Runs on the CPU (many small element-wise kernels; no network).
"""

from __future__ import annotations

import numpy as np
import torch

from stages.colour_match import (
    blur_image,
    lab_stats,
    lab_transfer,
    matching_blur,
    shading_transfer,
    skin_weights,
)
from stages.face_warp import (
    MIRROR_68,
    MIRROR_BAND,
    control_points,
    far_half_weight,
    mirror_weight,
    piecewise_affine_grid,
    sample_pixels,
    signed_turn,
    smooth_shape,
    source_shape_landmarks,
    triangulate,
    turn_weight,
)
from stages.geometry import points5_from_68, tensor_of
from stages.mask_geometry import face_masks, smooth_ramp
from stages.occluders import luma
from stages.scene import SceneCuts, TrackMemory
from stages.source_face import SourceFace, close_source_mouth, source_layers
from stages.types import FrameBatch, swap_groups

SHADING_DARK = 0.6  # target pixels darker than this share of its median skin luma are not skin (hair, frames)


def _fade_pair(cfg: dict, key: str) -> tuple[float, float]:
    """``classic.<key>``: two numbers ``0 <= a < b`` (a fade between them), as floats; ConfigError else."""
    fade = cfg["classic"][key]
    pair = isinstance(fade, (list, tuple)) and len(fade) == 2
    if not (pair and 0.0 <= float(fade[0]) < float(fade[1])):
        from models.errors import ConfigError

        raise ConfigError(f"classic.{key} must be two numbers 0 <= a < b, got {fade!r}")
    return float(fade[0]), float(fade[1])


class ClassicSwapStage:
    """Swap every selected face of a batch with one source face (no learned weights).

    Sets ``face.swapped`` ``(S, S, 3) uint8`` RGB and ``face.mask`` ``(S, S) float32`` in [0, 1] on every
    selected face that has ``crop`` and ``landmarks68``; other faces are left as they are. The mask fades out
    on faces turned further than ``classic.turn_fade`` (:func:`turn_weight`): a frontal photo warped onto a
    3/4 view put the eyes on the cheek (hamilton's turned faces), so such a face keeps its own.
    """

    def __init__(self, cfg: dict, source: SourceFace) -> None:
        self.cfg = cfg
        self.size = int(cfg["align"]["crop_size"])
        if source.crop.shape != (self.size, self.size, 3):
            raise ValueError(
                f"source crop is {source.crop.shape}, expected ({self.size}, {self.size}, 3): "
                "build it with make_source_face and the same config"
            )
        self.source = source
        self.color = str(cfg["classic"].get("color_transfer", "lab"))
        if self.color not in ("lab", "none"):
            raise ValueError(f"classic.color_transfer must be 'lab' or 'none', got {self.color!r}")
        self.shading_sigma = float(cfg["classic"]["shading_sigma"])
        self.match_detail = bool(cfg["classic"]["match_detail"])
        self.shape_transfer = float(cfg["classic"]["shape_transfer"])
        if not 0.0 <= self.shape_transfer <= 1.0:
            raise ValueError(f"classic.shape_transfer must be in [0, 1], got {self.shape_transfer}")
        light = float(cfg["classic"]["even_source_light"])
        if not 0.0 <= light <= 1.0:
            raise ValueError(f"classic.even_source_light must be in [0, 1], got {light}")
        self.color_smoothing = float(cfg["classic"]["color_smoothing"])
        if not 0.0 <= self.color_smoothing < 1.0:
            raise ValueError(f"classic.color_smoothing must be in [0, 1), got {self.color_smoothing}")
        self.shape_smoothing = float(cfg["classic"]["shape_smoothing"])
        if not 0.0 <= self.shape_smoothing < 1.0:
            raise ValueError(f"classic.shape_smoothing must be in [0, 1), got {self.shape_smoothing}")
        self.turn_fade = _fade_pair(cfg, "turn_fade")
        mirror = _fade_pair(cfg, "mirror_turned_source")
        self.scene = SceneCuts(cfg)
        self._colour = TrackMemory()  # Lab (mean, std) of the target per track
        self._detail = TrackMemory()  # sharpness-matching blur (px) per track
        self._shape = TrackMemory()  # the source's shape offsets in the face's own frame, per track
        self.src_points = control_points(source.landmarks68, self.size)
        self.triangles = triangulate(self.src_points)
        filled, visible, frame_zone = source_layers(source, cfg)
        if cfg["classic"].get("keep_inner_mouth", True):
            src = torch.from_numpy(close_source_mouth(filled, source.landmarks68)).permute(2, 0, 1)
        else:
            src = tensor_of(filled).permute(2, 0, 1).float().div(255.0)
        self.src_tensor = src[None].contiguous()
        self.src_visible = torch.from_numpy(visible)[None, None]  # (1, 1, S, S)
        self.src_frame_zone = torch.from_numpy(frame_zone)[None, None]  # (1, 1, S, S)
        # (1, 5, S, S): RGB, visibility, frame zone, warped together
        self.src_layers = torch.cat([self.src_tensor, self.src_visible, self.src_frame_zone], 1)
        # a turned photo's far half is replaced by its near half mirrored (see swap)
        turn = signed_turn(points5_from_68(np.asarray(source.landmarks68, dtype=np.float64)))
        ramp = (abs(turn) - mirror[0]) / (mirror[1] - mirror[0])
        self.mirror_share = (
            float(smooth_ramp(torch.tensor(ramp, dtype=torch.float64))) if np.isfinite(turn) else 0.0
        )
        self.far_sign = 1.0 if turn > 0 else -1.0
        if self.mirror_share > 0:
            flipped = np.asarray(source.landmarks68, dtype=np.float64).copy()
            flipped[:, 0] = self.size - 1 - flipped[:, 0]
            self.mirror_points = control_points(flipped[MIRROR_68], self.size)
            self.mirror_triangles = triangulate(self.mirror_points)
            self.mirror_layers = torch.flip(self.src_layers, dims=[3]).contiguous()

    def swap(
        self,
        crops: np.ndarray,
        landmarks: np.ndarray,
        target_stats: list | None = None,
        blur_filters: list | None = None,
        shape_filters: list | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Swap a stack of aligned target crops.

        crops: ``(F, S, S, 3) uint8`` RGB. landmarks: ``(F, 68, 2)`` in crop pixels. target_stats: per
        face None or a callable ``mask -> (mean, std)`` giving the Lab statistics to match (see __call__).
        blur_filters: per face a callable ``sigma -> sigma`` smoothing the sharpness match along its track.
        shape_filters: per face a callable smoothing the source's shape offsets along its track
        (:func:`smooth_shape`).
        Returns swapped ``(F, S, S, 3) uint8`` RGB and masks ``(F, S, S) float32`` in [0, 1]. S is the crops'
        side, which may be below the source crop's (``align.min_crop_size``): the warp samples the source
        crop directly, and every scale (mask feather, shading, sharpness) is a share of S.
        """
        n = len(crops)
        size = self.size if n == 0 else int(crops.shape[1])
        if n == 0:
            return np.zeros((0, size, size, 3), np.uint8), np.zeros((0, size, size), np.float32)
        lm = np.asarray(landmarks, dtype=np.float64)
        lm = np.where(np.isfinite(lm), lm, size / 2.0)
        shaped = source_shape_landmarks(lm, self.source.landmarks68, self.shape_transfer)
        if shape_filters is not None:
            shaped = np.stack([smooth_shape(lm[i], shaped[i], shape_filters[i]) for i in range(n)])
        dst_points = control_points(shaped, size)
        grid = piecewise_affine_grid(self.src_points, dst_points, self.triangles, size, self.size)
        warped = sample_pixels(self.src_layers, grid)  # RGB, visibility, frame zone
        masks = face_masks(lm, self.cfg, size=size)  # the target's silhouette, own inner mouth (not moved)
        if self.mirror_share > 0:  # where the far half is stretched: from the near half, mirrored
            share = mirror_weight(grid, masks, far_half_weight(shaped, size, self.far_sign, MIRROR_BAND))
            grid = piecewise_affine_grid(
                self.mirror_points, dst_points, self.mirror_triangles, size, self.size
            )
            mirrored = sample_pixels(self.mirror_layers, grid)
            warped = torch.lerp(warped, mirrored, (share * self.mirror_share)[:, None])
        warped, visible, frame_zone = warped[:, :3], warped[:, 3], warped[:, 4]
        if self.color == "lab":
            target = tensor_of(crops).permute(0, 3, 1, 2).float().div(255.0)
            stats = target_stats if target_stats is not None else [None] * n
            out = []
            for i in range(n):
                ts = None if stats[i] is None else stats[i](masks[i])
                kw = {
                    "target_stats": ts,
                    "src_weight": masks[i] * visible[i],
                    "skin_tone": frame_zone[i],
                    "detail_sigma": self._detail_sigma(size),
                }
                out.append(lab_transfer(warped[i], target[i], masks[i], **kw))
            warped = torch.stack(out)
        if self.color == "lab" and self.shading_sigma > 0:
            skin = skin_weights(shaped, size)
            target_np = target.permute(0, 2, 3, 1).numpy()
            warped_np = warped.permute(0, 2, 3, 1).contiguous().numpy()
            weight, shown = masks.numpy(), visible.numpy()
            done = []
            for i in range(n):  # one face at a time: no result depends on the batch
                gray = luma(target_np[i])
                w_dst = skin[i] * weight[i]
                on_skin = gray[w_dst > 0.5]
                if on_skin.size:  # hair and frames darker than the skin are no shading to follow
                    w_dst = w_dst * (gray >= SHADING_DARK * float(np.median(on_skin)))
                w_src = skin[i] * weight[i] * shown[i]
                face = shading_transfer(warped_np[i], target_np[i], w_src, w_dst, self.shading_sigma * size)
                if self.match_detail:  # the frame's sharpness: a sharp photo in a soft or blurred frame
                    blur = matching_blur(face, target_np[i], w_src, w_dst)
                    if blur_filters is not None:  # smoothed as a share of the side: a track's side may change
                        blur = float(blur_filters[i](blur / size)) * size
                    face = blur_image(face, blur)
                done.append(face)
            warped = torch.from_numpy(np.stack(done)).permute(0, 3, 1, 2)
        masks = masks * visible
        swapped = warped.mul(255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        return swapped.numpy(), masks.contiguous().numpy()

    def __call__(self, batch: FrameBatch) -> FrameBatch:
        cuts = self.scene.of(batch)
        groups = swap_groups(batch)
        if not groups:
            return batch
        frame_of = {id(f): int(batch.indices[i]) for i, fs in enumerate(batch.faces) for f in fs}
        cut_at = {int(batch.indices[i]) for i in np.flatnonzero(cuts)}
        # one crop side at a time; every face's result is its own, so grouping changes nothing. Each face's
        # track filters are called in frame order within a group, and a track has one face a frame
        for todo, crops, lm in groups:
            stats = [
                self._smoothed_stats(batch.video_id, f, frame_of[id(f)], cut_at, c)
                for f, c in zip(todo, crops)
            ]
            blurs = [self._smoothed_blur(batch.video_id, f, frame_of[id(f)], cut_at) for f in todo]
            shapes = [self._smoothed_shape(batch.video_id, f, frame_of[id(f)], cut_at) for f in todo]
            swapped, masks = self.swap(
                crops,
                lm,
                stats if self.color_smoothing > 0 else None,
                blurs if self.color_smoothing > 0 else None,
                shapes if self.shape_smoothing > 0 and self.shape_transfer > 0 else None,
            )
            for face, sw, m in zip(todo, swapped, masks):
                face.swapped = sw
                face.mask = m * np.float32(turn_weight(face.points5, self.turn_fade))
        self._colour.forget_before(batch.video_id, int(batch.indices[0]))
        self._detail.forget_before(batch.video_id, int(batch.indices[0]))
        self._shape.forget_before(batch.video_id, int(batch.indices[0]))
        return batch

    def _smoothed_shape(self, video_id: str, face, frame: int, cut_at: set[int]):
        """A callable ``offsets -> offsets`` (``(68, 2)`` in the face's own frame): exponentially smoothed
        along the track by ``classic.shape_smoothing``, restarting at a cut or a gap, so the per-frame fit of
        the source's shape (on landmarks that wobble) does not make the pasted eyes and nose wobble. The state
        is float32, as the colour statistics: a segment's run-in brings it to the unsegmented run's bit for
        bit (a difference decayed below float32 resolution rounds away; in float64 it lingers and moves a
        pixel's rounding now and then)."""
        return self._along_track(
            self._shape, np.float32(self.shape_smoothing), video_id, face, frame, cut_at, np.float32
        )

    def _smoothed_blur(self, video_id: str, face, frame: int, cut_at: set[int]):
        """A callable ``sigma -> sigma``: the sharpness-matching blur, smoothed along the track like the
        colour statistics (``classic.color_smoothing``), so the face does not pulse between sharp and soft.
        The state is float32 for the reason given in :meth:`_smoothed_shape` (a Python float's state differed
        by an ulp after a segment's run-in and moved one frame's pixels)."""
        return self._along_track(
            self._detail, np.float32(self.color_smoothing), video_id, face, frame, cut_at, np.float32
        )

    @staticmethod
    def _along_track(
        memory: TrackMemory, factor, video_id: str, face, frame: int, cut_at: set[int], dtype=None
    ):
        """A callable ``value -> value``: ``factor * previous + (1 - factor) * value`` along the face's track
        in ``memory`` (the state kept as ``dtype`` when given). A face with nothing to smooth against (a
        track's first frame, after a cut or a gap, an untracked face) keeps its own value exactly."""

        def smooth(now):
            prev = memory.previous(video_id, face.track_id, frame, frame in cut_at)
            state = now if dtype is None else np.asarray(now, dtype=dtype)
            if prev is not None:
                state = factor * prev + (1 - factor) * state
            memory.store(video_id, face.track_id, frame, state)
            return now if prev is None else state

        return smooth

    def _detail_sigma(self, size: int) -> float | None:
        """Scale (px of a ``size`` crop) below which the colour match measures lightness contrast: the
        shading transfer's, when it is on (the source's light above it is replaced anyway); None:
        whole-band."""
        return self.shading_sigma * size if self.color == "lab" and self.shading_sigma > 0 else None

    def _smoothed_stats(self, video_id: str, face, frame: int, cut_at: set[int], crop: np.ndarray):
        """A callable ``mask -> (mean, std)``: the face's target Lab statistics, exponentially smoothed
        along its track (restarting at a cut or a missing frame), so the colour match does not flicker."""
        target = tensor_of(crop).permute(2, 0, 1).float().div(255.0)

        def stats(mask: torch.Tensor):
            now = lab_stats(target, mask, detail_sigma=self._detail_sigma(crop.shape[0]))
            if now is None:
                return None
            prev = self._colour.previous(video_id, face.track_id, frame, frame in cut_at)
            if prev is not None:
                a = self.color_smoothing
                now = (a * prev[0] + (1 - a) * now[0], a * prev[1] + (1 - a) * now[1])
            self._colour.store(video_id, face.track_id, frame, now)
            return now

        return stats

    def flush(self) -> list[FrameBatch]:
        self._colour.clear()
        self._detail.clear()
        self._shape.clear()
        return []
