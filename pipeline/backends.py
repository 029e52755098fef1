"""Registry of swap backends: the stage that swaps, what it takes from the source photo, its weight files.

Each entry names the stage that swaps, what it takes from the source photo, and the weight files its config
needs. A new backend is one stage module plus one entry in :data:`BACKENDS`; ``swap.backend``'s schema
choices must name exactly these (``tests/test_config.py``).

Used by :mod:`pipeline.run`: ``weights(cfg)`` before any work (the files are checked), ``prepare(image,
face, path, cfg)`` once per video (the source object the stage is built with), ``stage_class()`` for the
swap stage of the chain, built as ``cls(cfg, source)``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Backend:
    """stage: (module, class) of the swap stage. prepare: ``(photo (H, W, 3) uint8 RGB, the chosen
    FaceRecord, the photo's path, cfg)`` -> the source object the stage takes. weights: cfg -> registry
    names of the files it loads."""

    stage: tuple[str, str]
    prepare: Callable[[np.ndarray, Any, str | Path, dict], Any]
    weights: Callable[[dict], list[str]]

    def stage_class(self) -> type:
        module, name = self.stage
        return getattr(importlib.import_module(module), name)


def _classic_source(image: np.ndarray, face: Any, path: str | Path, cfg: dict):
    """The aligned SourceFace (crop and 68 landmarks); one-line notes on a small face or hidden eyes."""
    from stages.landmarks import LandmarkStage
    from stages.source_face import make_source_face

    LandmarkStage(cfg).landmarks_for(image, [face])
    source = make_source_face(image, face.points5, face.landmarks68, cfg)
    for note in (
        low_resolution_note(path, face.landmarks68, source.landmarks68),
        hidden_eyes_note(path, source, cfg),
    ):
        if note:
            print(note, file=sys.stderr)
    return source


def _faceshifter_source(image: np.ndarray, face: Any, path: str | Path, cfg: dict) -> np.ndarray:
    """The source's raw ArcFace embedding ``(512,) float32`` (GHOST's identity input)."""
    from stages.swap_faceshifter import source_identity

    return source_identity(image, face.points5, cfg)


def _faceshifter_weights(cfg: dict) -> list[str]:
    """AEI-Net and the configured ArcFace; HEAR-Net when ``faceshifter.hear`` is ``always``, or ``auto``
    and its file is there."""
    from models.weights import REGISTRY

    names = ["aei_net", cfg["faceshifter"]["arcface"]]
    hear = cfg["faceshifter"]["hear"]
    hear_file = Path(cfg["weights"]["dir"]) / REGISTRY["hear_net"].filename
    if hear == "always" or (hear == "auto" and hear_file.is_file()):
        names.append("hear_net")
    return names


def _wsc_source(image: np.ndarray, face: Any, path: str | Path, cfg: dict) -> np.ndarray:
    """The source's raw ArcFace embedding ``(512,) float32`` by ``wsc.arcface`` (as the faceshifter
    backend embeds it)."""
    from stages.swap_faceshifter import source_identity

    return source_identity(image, face.points5, cfg, cfg["wsc"]["arcface"])


def _wsc_weights(cfg: dict) -> list[str]:
    """The WSC-swap generator, the configured ArcFace, and the face parser with ``wsc.regions=parsing``."""
    names = ["wsc_generator", cfg["wsc"]["arcface"]]
    if cfg["wsc"]["regions"] == "parsing":
        names.append("face_parser_bisenet")
    return names


def _aligned_crop_source(image: np.ndarray, face: Any, path: str | Path, cfg: dict) -> np.ndarray:
    """The source's face cut as the targets are, ``(S, S, 3) uint8`` (the latent and RSGAN stages encode
    it once)."""
    from stages.align import crop_photo_face

    return crop_photo_face(image, face.points5, cfg["align"])


BACKENDS: dict[str, Backend] = {
    "classic": Backend(("stages.swap_classic", "ClassicSwapStage"), _classic_source, lambda cfg: []),
    "faceshifter": Backend(
        ("stages.swap_faceshifter", "FaceShifterSwapStage"), _faceshifter_source, _faceshifter_weights
    ),
    "wsc": Backend(("stages.swap_wsc", "WSCSwapStage"), _wsc_source, _wsc_weights),
    "latent": Backend(
        ("stages.swap_latent", "LatentSwapStage"),
        _aligned_crop_source,
        lambda cfg: ["stylegan2_ffhq", "latent_swap"],
    ),
    "rsgan": Backend(("stages.swap_rsgan", "RSGANSwapStage"), _aligned_crop_source, lambda cfg: ["rsgan"]),
}


# ------------------------------------------------------------------------- notes on the classic source


LOW_RESOLUTION = 0.6  # a source face enlarged more than 1/this to fill the aligned crop is reported


def low_resolution_note(path: str | Path, photo68: np.ndarray, crop68: np.ndarray) -> str | None:
    """One line when the photo's face is much smaller than the aligned crop it is enlarged to (the swapped
    face will look softer than a sharp video), else None. Landmarks ``(68, 2)`` in photo and crop pixels."""

    from stages.occluders import inter_ocular

    have, need = inter_ocular(photo68), inter_ocular(crop68)
    if have >= LOW_RESOLUTION * need:
        return None
    return (
        f"swapstream: note: the face in {path} is small (eyes {have:.0f} px apart, {need:.0f} px wanted): "
        "the swapped face will look softer than a sharp video; a larger photo gives a sharper result"
    )


def hidden_eyes_note(path: str | Path, source, cfg: dict) -> str | None:
    """One line when sunglasses hide the source's eyes and are dropped (``classic.source_glasses=drop``):
    the swapped face then keeps the target's eyes. None otherwise. source: the aligned SourceFace."""
    from stages.occluders import hides_eyes

    if cfg["classic"]["source_glasses"] != "drop" or not hides_eyes(source.crop, source.landmarks68):
        return None
    return (
        f"swapstream: note: sunglasses hide the eyes in {path}: the swapped face keeps the video's own eyes "
        "there (classic.source_glasses=drop); a photo with the eyes visible carries more of the person"
    )
