"""The ``train`` command: ``python -m pipeline train NAME --data CROPS --out DIR``, NAME a registered recipe.

``python -m pipeline train aei|hear --data CROPS --out DIR [--config FILE] [key=value ...]`` trains
FaceShifter's AEI-Net (``aei``) or, on top of it, HEAR-Net (``hear``) with
:func:`pipeline.training.loop.train`; the NAME choices are :data:`pipeline.training.recipes.RECIPES`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pipeline.training.loop import PROG, export_paths, train
from pipeline.training.recipes import RECIPES


def _summary(kind: str, history: list[dict], out_dir: Path, seconds: float) -> str:
    recipe = RECIPES[kind]
    exported = ", ".join(str(p) for p in export_paths(recipe, out_dir).values())
    if not history:
        return f"{PROG} {kind}: nothing to do (already at train.steps) -> {exported}"
    first, last = history[0], history[-1]
    per_step = sum(e["seconds"] for e in history) / len(history)
    total = recipe.total_loss
    return (
        f"{PROG} {kind}: steps {first['step']}..{last['step']} in {seconds:.1f} s "
        f"({per_step:.2f} s/step), loss {first[total]:.4f} -> {last[total]:.4f} -> {exported}"
    )


def main(argv: list[str] | None = None) -> int:
    """``train NAME --data DIR --out DIR [--config FILE] [--quiet] [key=value ...]``.

    Exit 0 when done, 2 (one-line error) on unusable data, config or weights, 130 when interrupted
    (the latest checkpoint stays; run the same command again to resume)."""
    parser = argparse.ArgumentParser(
        prog=f"python -m pipeline {PROG}",
        description="train FaceShifter's AEI-Net (aei) or, on top of it, HEAR-Net (hear) on face crops",
    )
    parser.add_argument(
        "kind",
        choices=tuple(RECIPES),
        help="; ".join(f"{name}: {recipe.summary}" for name, recipe in RECIPES.items()),
    )
    parser.add_argument(
        "--data", required=True, help="folder of crops made by `python -m pipeline prepare-faces`"
    )
    parser.add_argument(
        "--out", required=True, help="run folder: checkpoints, exported weights, logs, samples"
    )
    parser.add_argument(
        "--config", help="YAML config merged over configs/default.yaml (e.g. configs/train_tiny.yaml)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.steps=100"
    )
    args, extra = parser.parse_known_args(argv)
    unknown = [a for a in extra if a.startswith("-") or "=" not in a]
    if unknown:
        parser.error(f"unrecognised arguments: {' '.join(unknown)}")
    from pipeline.cli import guarded
    from pipeline.config import load_config

    def run() -> str:
        started = time.perf_counter()
        cfg = load_config(args.config, [*args.overrides, *extra])
        history = train(args.kind, args.data, args.out, cfg, progress=not args.quiet)
        return _summary(args.kind, history, Path(args.out), time.perf_counter() - started)

    resume = "run the same command again to resume from the latest checkpoint"
    return guarded(run, resume, debug=args.debug, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
