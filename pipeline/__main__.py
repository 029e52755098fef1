"""The command line ``python -m pipeline COMMAND``: parses, forks its supervisor, dispatches each command.

python -m pipeline swap --input IN --source SRC [--output OUT] [--config FILE] [key=value ...]
python -m pipeline weights [--dir weights]
python -m pipeline prepare-faces INPUT... --out DIR [...]
python -m pipeline edit --input PHOTO_OR_VIDEO --attribute smiling=1 [--output OUT] [key=value ...]
python -m pipeline crops --input PHOTO_OR_VIDEO --out DIR [--config FILE] [key=value ...]
python -m pipeline train aei|hear --data DIR --out DIR [--config FILE] [key=value ...]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from models.errors import EXIT_BAD_INPUT

# Sub-commands with parsers of their own: the rest of the command line is handed to them.
DELEGATED = {
    "prepare-faces": (
        "pipeline.training.prepare_faces",
        "align faces from videos or photos into 256 px training crops",
    ),
    "edit": ("pipeline.edit", "change face attributes (smiling, hair colour, ...) in a photo or video"),
    "sample": ("pipeline.sample", "random face or hair for a photo (RSGAN), as a grid image"),
    "crops": ("pipeline.crops", "write the aligned crops the configured swap backend receives (PNGs)"),
    "train": ("pipeline.training.train", "train AEI-Net or HEAR-Net (FaceShifter) on prepared crops"),
    "evaluate": (
        "pipeline.evaluation.evaluate",
        "score a swapped video against its original and source photo",
    ),
    "ffpp": (
        "pipeline.evaluation.ffpp",
        "FaceForensics++ benchmark: swap a split, score it on fixed networks",
    ),
    "quality": (
        "pipeline.evaluation.quality",
        "swap a grid of photos onto short clips; scores and a contact sheet",
    ),
    "batch": ("pipeline.manifest", "swap many videos listed in a CSV/JSONL manifest (resumable)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in DELEGATED:
        import importlib

        return importlib.import_module(DELEGATED[argv[0]][0]).main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m pipeline", description="swapstream: video face swap")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, text) in DELEGATED.items():
        sub.add_parser(name, help=text, add_help=False)
    swap = sub.add_parser("swap", help="swap the face of a photo onto the faces in a video")
    swap.add_argument("--input", required=True, help="video to change (never modified)")
    swap.add_argument("--source", required=True, help="photo of the face to put in the video")
    swap.add_argument(
        "--output",
        help="output video (default: <input stem>.swapped.mp4 beside the input, "
        "or in the current folder if that one is read-only)",
    )
    swap.add_argument("--config", help="YAML config merged over configs/default.yaml")
    swap.add_argument("--quiet", action="store_true", help="no progress bar")
    swap.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    swap.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    swap.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. executor=local"
    )
    fetch = sub.add_parser("weights", help="download the public checkpoints the registry knows, check hashes")
    fetch.add_argument("--dir", default="weights", help="folder to put them in (weights.dir)")
    fetch.add_argument("--only", action="append", help="registry name (repeatable); default: all public")
    fetch.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    args, extra = parser.parse_known_args(argv)
    if args.command == "weights":
        if extra:
            parser.error(f"unrecognised arguments: {' '.join(extra)}")
        return fetch_weights(args.dir, args.only, args.debug)
    unknown = [a for a in extra if a.startswith("-") or "=" not in a]
    if unknown:
        parser.error(f"unrecognised arguments: {' '.join(unknown)}")
    args.overrides = [*args.overrides, *extra]  # overrides may come before or after the options

    def swap() -> str:
        from pipeline.config import load_config
        from pipeline.run import swap_video

        cfg = load_config(args.config, args.overrides)
        summary = swap_video(
            args.input, args.source, args.output, cfg, progress=not args.quiet, overwrite=args.overwrite
        )
        return summary.line()

    from pipeline.cli import guarded

    return guarded(swap, "no output written", debug=args.debug)


def fetch_weights(folder: str, only: list[str] | None, debug: bool = False) -> int:
    """``make weights``: fetch what has a public address; list what the user must supply. Through the
    command line's one edge (:func:`pipeline.cli.guarded`): an unknown name is one line and exit 2; a
    download that fails is reported on its own line and the others still run (exit 2 at the end)."""
    from models.errors import ConfigError, SwapstreamError, one_line
    from models.weights import REGISTRY, download
    from pipeline.cli import guarded

    def fetch() -> int:
        names = only or list(REGISTRY)
        unknown = [n for n in names if n not in REGISTRY]
        if unknown:
            raise ConfigError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
        failed = 0
        for name in names:
            entry = REGISTRY[name]
            if entry.url is None:
                print(f"{name}: user-supplied {entry.filename}: {entry.obtain}")
                continue
            try:
                path, digest = download(name, folder)
            except SwapstreamError as exc:
                print(f"swapstream: error: {one_line(exc)}", file=sys.stderr)
                failed += 1
                continue
            print(f"{name}: {path} sha256 {digest}", flush=True)
        return EXIT_BAD_INPUT if failed else 0

    return guarded(fetch, "the files fetched so far are complete; a partial one was removed", debug=debug)


def _command() -> int:
    """The command this process (the supervised child) runs: :func:`main` on ``sys.argv``."""
    try:
        code = main()
    except KeyboardInterrupt:  # before guarded() took over (parsing the command line, first imports)
        print("swapstream: interrupted; no output written", file=sys.stderr)
        code = 130
    except SystemExit as exc:  # argparse's usage errors and --help: its message is out already
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except Exception:  # --debug re-raised it: its traceback is the report (exit 1)
        from pipeline.supervisor import announce

        announce("reported", "1")
        raise
    from pipeline.cli import end_command

    return end_command(code)  # a command that did not shut its Ray down: one way down


if __name__ == "__main__":
    try:
        from pipeline.supervisor import run_supervised

        code = run_supervised(_command)
    except KeyboardInterrupt:  # before the fork, or in the child as it unblocks a pending Ctrl-C
        from pipeline.cli import end_command

        print("swapstream: interrupted; no output written", file=sys.stderr)
        code = end_command(130)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # exiting now: a late Ctrl-C changes nothing
    if code == 130:
        # After a Ctrl-C, CPython's own exit would re-raise SIGINT when some library swallowed a
        # KeyboardInterrupt on the way (the process then dies "killed by SIGINT", not with our code).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
