"""``python -m pipeline edit``: change face attributes in a photo or a video, with MaskFaceGAN (the default;
the procedure and its choices are in :mod:`stages.attribute_edit`) or RSGAN (``--backend rsgan``,
:mod:`stages.edit_rsgan`).

    python -m pipeline edit --input PHOTO_OR_VIDEO --attribute smiling=1 [--attribute NAME=VALUE ...]
        [--backend maskfacegan|rsgan] [--output OUT] [--config FILE] [--overwrite] [--force-global]
        [--quiet] [key=value ...]

The input runs through the swap's own stages with the edit stage in the swap's place: detect, landmarks,
track, smooth, align (the backend's crop, set here: FFHQ's at the generator's size, or RSGAN's training
crop), edit, blend. A photo is a
one-frame video; its result is a PNG (lossless, so every pixel outside the blend mask keeps its exact value),
``<stem>.edited.png`` by default, with a text chunk saying it is synthetic. A video keeps its frames,
timestamps and audio exactly as the swap does (``<stem>.edited.mp4``) and may run under Ray
(``executor``), the edit stage taking the swap's actor group and GPUs. Outputs are written under a
temporary name and renamed when complete; an input is never changed.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

import pipeline
from models.errors import InputError

EDIT_STAGES = ("detect", "landmarks", "track", "smooth", "align", "swap", "blend")


EDIT_BACKENDS = {
    "maskfacegan": ("stages.attribute_edit", "AttributeEditStage"),
    "rsgan": ("stages.edit_rsgan", "RSGANEditStage"),
}


def edit_config(cfg: dict, backend: str = "maskfacegan") -> dict:
    """``cfg`` with the crop the backend's networks take, every face however small in the frame
    (MaskFaceGAN: FFHQ alignment at the generator's size; RSGAN: its training crop, GHOST's, at
    ``rsgan.layout.size``), and the video in one part."""
    from pipeline.config import with_overrides

    if backend == "rsgan":
        size = int(cfg["rsgan"]["layout"]["size"])
        crop = ["align.template=ghost", f"align.crop_size={size}", f"align.min_crop_size={size}"]
    else:
        size = int(cfg["stylegan2"]["size"])
        crop = ["align.template=ffhq", f"align.crop_size={size}", f"align.min_crop_size={size}"]
    # One part only: segments run apart would each start their tracks afresh (a MaskFaceGAN keyframe, a
    # smoothing filter), and the edit could change at a seam.
    return with_overrides(cfg, [*crop, "segments.parts=1"])


def build_edit_specs(cfg: dict, request) -> list:
    """The swap's chain (:func:`pipeline.run.build_specs`) with the request's edit stage in the swap's place
    and no mask stage (the edit brings its own paste mask)."""
    import importlib

    from pipeline.executors import StageSpec
    from pipeline.run import build_specs

    module, name = EDIT_BACKENDS[request.backend]
    stage_class = getattr(importlib.import_module(module), name)
    specs = []
    for spec in build_specs(cfg, None):
        if spec.name == "swap":
            specs.append(StageSpec("swap", stage_class, (cfg, request), num_gpus=spec.num_gpus))
        elif spec.name in EDIT_STAGES:
            specs.append(spec)
    return specs


def check_weights(cfg: dict, request) -> None:
    """The edit's files present and fitting their networks (keys, shapes), before any work."""
    from models.weights import verify_configured
    from stages.attribute_edit import EditPlan, edit_weights

    if request.backend == "rsgan":
        names = ["rsgan", "rsgan_discriminator"]
    else:
        plan = EditPlan.of(request.attributes, float(cfg["edit"]["smoothing"]), request.force_global)
        names = edit_weights(plan)
    for name in names:
        verify_configured(name, cfg)


def default_output(input_path: Path, photo: bool) -> Path:
    """``<stem>.edited.png`` (photo) or ``.edited.mp4`` beside the input, or in the current folder when the
    input's folder is read-only (as the swap's default)."""
    from pipeline.run import default_output as swap_default

    beside = swap_default(input_path)
    return beside.with_name(f"{input_path.stem}.edited{'.png' if photo else '.mp4'}")


def edit_photo(input_path: Path, output: Path, cfg: dict, request, overwrite: bool = False) -> str:
    """Edit every face of a photo; write ``output`` (PNG) atomically. Returns the summary line."""
    from models.files import synthetic_png, write_bytes_atomic
    from pipeline.executors import StageChain
    from pipeline.run import check_paths, load_image
    from stages.types import FrameBatch

    started = time.perf_counter()
    if output.suffix.lower() != ".png":
        raise InputError(
            f"{output}: an edited photo is written as PNG (lossless); give an OUT ending in .png"
        )
    check_paths(input_path, output, overwrite, suffixes=(".png",))
    check_weights(cfg, request)
    image = load_image(input_path)
    request = dataclasses.replace(request, photo=True)  # MaskFaceGAN's own procedure, no video offset
    zero = np.zeros(1, np.int64)
    chain = StageChain(build_edit_specs(cfg, request))
    done = [chain(FrameBatch(str(input_path), zero, zero, image[None])), *chain.flush()]
    batch = next(b for b in done if len(b.indices))
    edit_stage = next(s for s in chain.stages if hasattr(s, "keyframe_results"))
    if not batch.faces[0]:
        raise InputError(f"no face found in {input_path}: use a photo where the face is at least 64 px wide")
    faces = [f for f in batch.faces[0] if f.pasted]
    write_bytes_atomic(output, synthetic_png(batch.frames[0], "face attributes edited", pipeline.__version__))
    changes = "; ".join(_describe(result) for _, result in sorted(edit_stage.keyframe_results.items()))
    return (
        f"swapstream: {len(faces)} of {len(batch.faces[0])} face(s) edited ({changes}), "
        f"{time.perf_counter() - started:.1f} s -> {output}"
    )


def _describe(result) -> str:
    """``smiling 0.08 -> 0.93`` per attribute: the classifier's probability on the input and the result."""
    return ", ".join(f"{n} {result.before[n]:.2f} -> {result.after[n]:.2f}" for n in result.before)


def edit_video(
    input_path: Path,
    output: Path,
    cfg: dict,
    request,
    progress: bool = True,
    overwrite: bool = False,
    digest: bool = False,
):
    """Edit every tracked face of a video with the request's backend (:data:`EDIT_BACKENDS`); frames,
    timestamps and audio as the swap keeps them. Returns the :class:`pipeline.run.Summary` (with the
    frames' digest when ``digest``, as :func:`pipeline.run.swap_video`)."""
    from pipeline.run import run_video

    return run_video(
        input_path,
        output,
        cfg,
        lambda c: check_weights(c, request),
        lambda c, _: build_edit_specs(c, request),
        lambda c: build_edit_specs(c, request),
        progress,
        digest,
        None,
        overwrite,
        verb="edited",
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline edit", description="change face attributes in a photo or video"
    )
    parser.add_argument("--input", required=True, help="photo or video to edit (never modified)")
    parser.add_argument(
        "--attribute",
        action="append",
        required=True,
        metavar="NAME=VALUE",
        help="CelebA attribute and target in [0, 1], e.g. smiling=1, male=0 (repeatable)",
    )
    parser.add_argument(
        "--backend",
        choices=tuple(EDIT_BACKENDS),
        default="maskfacegan",
        help="maskfacegan (StyleGAN2 optimisation; default) | rsgan (trained with attribute labels)",
    )
    parser.add_argument("--output", help="output PNG or video (default: <input stem>.edited.png/.mp4)")
    parser.add_argument("--config", help="YAML config merged over configs/default.yaml")
    parser.add_argument(
        "--force-global", action="store_true", help="edit the whole face even for a local attribute"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args(argv)

    def run() -> str:
        from pipeline.config import load_config
        from pipeline.run import IMAGE_EXTS
        from stages.attribute_edit import EditError, EditRequest, parse_attributes

        try:
            request = EditRequest(parse_attributes(args.attribute), args.force_global, args.backend)
        except EditError as exc:
            raise InputError(str(exc)) from None
        cfg = edit_config(load_config(args.config, args.overrides), args.backend)
        input_path = Path(args.input)
        if not input_path.is_file():
            raise InputError(f"{input_path}: no such file")
        photo = input_path.suffix.lower() in IMAGE_EXTS
        output = Path(args.output) if args.output else default_output(input_path, photo)
        if photo:
            return edit_photo(input_path, output, cfg, request, args.overwrite)
        summary = edit_video(input_path, output, cfg, request, not args.quiet, args.overwrite)
        return summary.line()

    from pipeline.cli import guarded

    code = guarded(run, "no output written", debug=args.debug)
    sys.stdout.flush()
    return code
