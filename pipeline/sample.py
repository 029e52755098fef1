"""``python -m pipeline sample``: random part synthesis with RSGAN (:mod:`models.rsgan`): a photo's face with
new random hair, or its hair with new random faces, as a grid image.

    python -m pipeline sample --backend rsgan --part face|hair --input PHOTO [--output GRID.png]
        [--count 15] [--seed 0] [--config FILE] [--overwrite] [key=value ...]

The photo's largest face (``swap.source_face`` chooses another) is cut as RSGAN's training crops are
(``configs/rsgan.yaml``'s crop, set here) and encoded; ``--part face`` keeps its hair latent and draws
``count`` face latents from the prior N(0, I), ``--part hair`` the other way round. The grid, ``count + 1``
tiles in rows of 4 (the photo's crop first, then the samples), is a PNG saying it is synthetic, written
under a temporary name and renamed when complete; ``<stem>.sample-<part>.png`` beside the photo by default.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import pipeline
from models.errors import InputError

GRID_COLUMNS = 4


def sample_grid(photo: Path, part: str, count: int, seed: int, cfg: dict) -> np.ndarray:
    """The grid ``(H, W, 3) uint8`` RGB (module docstring)."""
    import torch

    from models.weights import load_configured
    from pipeline.run import check_source, choose_source_face
    from stages.align import crop_photo_face
    from stages.detect import DetectStage
    from stages.landmarks import LandmarkStage
    from stages.swap_faceshifter import to_signed, to_uint8
    from stages.swap_rsgan import rsgan_parser
    from stages.swap_wsc import crop_regions

    image = check_source(photo, cfg)
    faces = DetectStage(cfg).detect_image(image)
    if not faces:
        raise InputError(f"no face found in {photo}: use a photo where the face is at least 64 px wide")
    face, _ = choose_source_face(photo, faces, cfg["swap"]["source_face"])
    crop = crop_photo_face(image, face.points5, cfg["align"])
    net = load_configured("rsgan", cfg)
    x = to_signed(crop[None], "cpu", torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        region = crop_regions(x, cfg["align"]["template"], LandmarkStage(cfg), rsgan_parser(cfg, "cpu"))
        mu_face, _, mu_hair, _ = net.encode(x, region)
        drawn = torch.randn(count, net.z_dim, generator=gen)
        if part == "face":
            tiles = net.generate(drawn, mu_hair.expand(count, -1))
        else:
            tiles = net.generate(mu_face.expand(count, -1), drawn)
    images = [crop, *to_uint8(tiles)]
    side = crop.shape[0]
    rows = -(-len(images) // GRID_COLUMNS)
    grid = np.zeros((rows * side, GRID_COLUMNS * side, 3), np.uint8)
    for k, tile in enumerate(images):
        r, c = divmod(k, GRID_COLUMNS)
        grid[r * side : (r + 1) * side, c * side : (c + 1) * side] = tile
    return grid


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline sample", description="random face or hair for a photo (RSGAN), as a grid"
    )
    parser.add_argument("--backend", choices=("rsgan",), required=True, help="the model that samples")
    parser.add_argument("--part", choices=("face", "hair"), required=True, help="the part drawn at random")
    parser.add_argument("--input", required=True, help="photo whose other part is kept (never modified)")
    parser.add_argument("--output", help="grid PNG (default: <photo stem>.sample-<part>.png beside it)")
    parser.add_argument("--count", type=int, default=15, help="samples (default 15; the grid adds the photo)")
    parser.add_argument("--seed", type=int, default=0, help="the samples' random seed (default 0)")
    parser.add_argument(
        "--config", help="YAML config merged over configs/default.yaml and configs/rsgan.yaml"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args(argv)

    def run() -> str:
        from models.files import synthetic_png, write_bytes_atomic
        from pipeline.config import CONFIG_DIR, load_config
        from pipeline.run import check_paths, default_output

        started = time.perf_counter()
        if not 1 <= args.count <= 256:
            raise InputError(f"--count {args.count}: give 1 to 256 samples")
        base = load_config(CONFIG_DIR / "rsgan.yaml")
        cfg = load_config(args.config, [*_crop_of(base), *args.overrides])
        photo = Path(args.input)
        if not photo.is_file():
            raise InputError(f"{photo}: no such file")
        output = (
            Path(args.output)
            if args.output
            else default_output(photo).with_name(f"{photo.stem}.sample-{args.part}.png")
        )
        check_paths(photo, output, args.overwrite, suffixes=(".png",))
        grid = sample_grid(photo, args.part, args.count, args.seed, cfg)
        write_bytes_atomic(output, synthetic_png(grid, f"random {args.part} (RSGAN)", pipeline.__version__))
        return (
            f"swapstream: {args.count} random {args.part}s for {photo.name}, "
            f"{time.perf_counter() - started:.1f} s -> {output}"
        )

    from pipeline.cli import guarded

    return guarded(run, "no output written", debug=args.debug)


def _crop_of(rsgan_cfg: dict) -> list[str]:
    """Overrides that give RSGAN's crop (``configs/rsgan.yaml``'s ``align`` keys), so that a user config
    or override (e.g. a tiny ``rsgan.layout.size`` with its ``align.crop_size``) still wins."""
    return [
        f"align.template={rsgan_cfg['align']['template']}",
        f"align.crop_size={rsgan_cfg['align']['crop_size']}",
    ]
