"""Blend/paste stage: exact pixels outside the mask, the swapped crop inside it, read-only frames."""

from __future__ import annotations

import av
import kornia
import numpy as np
import pytest
import torch

from stages.blend import BlendStage, mask_footprint
from stages.geometry import invert_affine, warp_crops
from stages.types import FaceRecord, FrameBatch
from tests.conftest import DATA

S = 256


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """Two real 480x480 frames ``(2, H, W, 3) uint8`` RGB."""
    out = []
    with av.open(str(DATA / "videos" / "liveportrait_d20.mp4")) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in (0, 40):
                out.append(frame.to_ndarray(format="rgb24"))
            if i >= 40:
                break
    return np.stack(out)


def similarity(scale: float, angle_deg: float, frame_centre: tuple[float, float]) -> np.ndarray:
    """``(2, 3) float32`` frame → crop: ``frame_centre`` lands on the crop centre, rotated and scaled."""
    a = np.deg2rad(angle_deg)
    lin = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    c = (S - 1) / 2.0
    t = np.array([c, c]) - lin @ np.asarray(frame_centre, dtype=np.float64)
    return np.concatenate([lin, t[:, None]], 1).astype(np.float32)


def disc_mask(inner: float = 70.0, outer: float = 100.0) -> np.ndarray:
    """``(S, S) float32``: 1 inside radius ``inner``, smooth ramp to exactly 0 at ``outer``."""
    ys, xs = np.mgrid[0:S, 0:S].astype(np.float32)
    r = np.hypot(xs - (S - 1) / 2.0, ys - (S - 1) / 2.0)
    t = np.clip((outer - r) / (outer - inner), 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def texture(seed: int = 0) -> np.ndarray:
    """A textured ``(S, S, 3) uint8`` RGB crop that differs from any real frame."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:S, 0:S]
    base = np.stack([xs, ys, (xs + ys) // 2], -1).astype(np.float32)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def face(affine: np.ndarray, swapped: np.ndarray, mask: np.ndarray) -> FaceRecord:
    return FaceRecord(
        box=np.zeros(4, np.float32),
        score=1.0,
        points5=np.zeros((5, 2), np.float32),
        affine=affine,
        crop=np.zeros((S, S, 3), np.uint8),
        swapped=swapped,
        mask=mask,
    )


def reference_warp(img: np.ndarray, affine: np.ndarray, h: int, w: int) -> np.ndarray:
    """Warp a crop ``(S, S, C)`` float into the whole frame (the slow, obvious way): ``(h, w, C)``."""
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
    m = torch.from_numpy(invert_affine(affine))[None]
    out = kornia.geometry.transform.warp_affine(
        t, m, (h, w), mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return out[0].permute(1, 2, 0).numpy()


def test_pixels_outside_the_mask_stay_exact_and_inside_show_the_swap(frames):
    h, w = frames.shape[1:3]
    affine = similarity(1.3, 12.0, (240.0, 250.0))
    swapped, mask = texture(), disc_mask()
    batch = FrameBatch("v", np.arange(2), np.arange(2), frames.copy(), [[face(affine, swapped, mask)], []])
    out = BlendStage({}).__call__(batch).frames
    alpha = reference_warp(mask[..., None], affine, h, w)[..., 0]
    # outside the warped mask: bit-exact
    assert np.array_equal(out[0][alpha == 0], frames[0][alpha == 0])
    assert np.array_equal(out[1], frames[1])
    changed = (out[0] != frames[0]).any(-1)
    assert changed.sum() > 10000 and (alpha[changed] > 0).all()
    # where the mask is 1: the swapped crop warped back
    ref = reference_warp(swapped.astype(np.float32), affine, h, w)
    full = alpha >= 1.0 - 1e-6
    assert full.sum() > 5000
    assert np.abs(out[0][full].astype(np.float32) - ref[full]).max() <= 2.0
    # in between: a convex mix of frame and swap
    part = (alpha > 0.05) & (alpha < 0.95)
    mix = frames[0][part] * (1 - alpha[part, None]) + ref[part] * alpha[part, None]
    assert np.abs(out[0][part] - mix).max() <= 2.0


def test_pasting_the_aligned_crop_back_restores_the_frame(frames):
    """Same pixel convention as geometry.warp_crops: with a pure translation the round trip is exact."""
    affine = np.array([[1.0, 0.0, -111.0], [0.0, 1.0, -97.0]], dtype=np.float32)
    crop = warp_crops(frames, [1], [affine], S)[0]
    batch = FrameBatch(
        "v", np.arange(1), np.arange(1), frames[1:].copy(), [[face(affine, crop, disc_mask())]]
    )
    BlendStage({})(batch)
    assert np.array_equal(batch.frames[0], frames[1])


def test_read_only_frames_are_copied_not_written(frames):
    ro = frames.copy()
    ro.setflags(write=False)
    affine = similarity(1.0, -20.0, (200.0, 260.0))
    rec = face(affine, texture(1), disc_mask())
    batch = FrameBatch("v", np.arange(2), np.arange(2), ro, [[rec], []])
    out = BlendStage({})(batch)
    assert out.frames is not ro and out.frames.flags.writeable
    assert np.array_equal(ro, frames)
    assert not np.array_equal(out.frames[0], frames[0])
    # the large per-face arrays are released once pasted
    assert rec.crop is None and rec.swapped is None and rec.mask is None
    assert rec.affine is not None and rec.pasted


def test_faces_without_a_swap_leave_the_frames_alone(frames):
    ro = frames.copy()
    ro.setflags(write=False)
    unselected = face(similarity(1.0, 0.0, (240.0, 240.0)), None, None)
    unselected.selected = False
    empty_mask = face(similarity(1.0, 0.0, (240.0, 240.0)), texture(), np.zeros((S, S), np.float32))
    batch = FrameBatch("v", np.arange(2), np.arange(2), ro, [[unselected], [empty_mask]])
    stage = BlendStage({})
    out = stage(batch)
    assert out.frames is ro  # nothing to paste: no copy
    assert not unselected.pasted and not empty_mask.pasted
    assert np.array_equal(out.frames[0], frames[0]) and stage.flush() == []
    assert unselected.crop is None and empty_mask.swapped is None


def test_face_hanging_over_the_frame_edge(frames):
    h, w = frames.shape[1:3]
    affine = similarity(0.9, 30.0, (10.0, h - 20.0))  # crop centred near the bottom-left corner
    swapped, mask = texture(2), disc_mask()
    batch = FrameBatch("v", np.arange(1), np.arange(1), frames[:1].copy(), [[face(affine, swapped, mask)]])
    out = BlendStage({})(batch).frames[0]
    alpha = reference_warp(mask[..., None], affine, h, w)[..., 0]
    assert np.array_equal(out[alpha == 0], frames[0][alpha == 0])
    assert (out != frames[0]).any()
    # a face entirely outside the frame is skipped
    far = similarity(1.0, 0.0, (-500.0, -500.0))
    assert mask_footprint(mask, invert_affine(far), h, w) is None
    batch = FrameBatch("v", np.arange(1), np.arange(1), frames[:1].copy(), [[face(far, swapped, mask)]])
    assert np.array_equal(BlendStage({})(batch).frames[0], frames[0])
