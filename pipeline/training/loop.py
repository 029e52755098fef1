"""The generic training loop: runs any registered recipe on face crops; checkpoints, resume, logs, Ray.

The loop owns device, seeds, data (:mod:`pipeline.training.data`), when to step, log, sample and checkpoint,
resume, the writers, Ray Train and the final export; the recipe (:mod:`pipeline.training.recipe`) owns the
networks, losses and what one step does. Out folder::

    checkpoints/step_XXXXXXX.pt   {"step", "kind", "arch", <each network's state_dict and each optimiser's
                                  state under the recipe's names>, "rng": {"torch"}}: loadable with
                                  torch.load(weights_only=True)
    <registry filename>           each exported network as a plain state_dict (models.weights layout)
    scalars.jsonl, logs/          one JSON line per logged step; the same scalars for TensorBoard
    samples/step_XXXXXXX.png      the recipe's sample rows (first target | source), one pair per column

A run resumes from the latest checkpoint in ``out`` (same network layout required) and trains up to
``train.steps``. With ``train.workers > 1`` the same loop runs data-parallel under Ray Train (DDP, gloo on
CPU); ``train.batch_size`` is per worker and rank 0 writes every file (``out`` must be visible to every
worker). An interrupted run keeps its latest checkpoint; the writers are closed on the way out.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.errors import ConfigError, InputError
from models.files import write_atomic, write_png
from models.weights import REGISTRY
from pipeline.training.data import BATCH_RANGE, FaceCrops, PairBatch, PairSampler
from pipeline.training.recipe import RESERVED_KEYS, Recipe, core
from pipeline.training.recipes import recipe as recipe_class

SAMPLE_PAIRS = 8
PROG = "train"
_CKPT_RE = re.compile(r"^step_(\d+)\.pt$")


# --------------------------------------------------------------------------------------------- files


def checkpoint_path(out_dir: str | Path, step: int) -> Path:
    """``out_dir/checkpoints/step_XXXXXXX.pt``."""
    return Path(out_dir) / "checkpoints" / f"step_{step:07d}.pt"


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The checkpoint with the highest step in ``out_dir/checkpoints`` (None when there is none)."""
    folder = Path(out_dir) / "checkpoints"
    found = [(int(m.group(1)), p) for p in folder.glob("step_*.pt") if (m := _CKPT_RE.match(p.name))]
    return max(found)[1] if found else None


def export_paths(recipe: type[Recipe], out_dir: str | Path) -> dict[str, Path]:
    """Network name → where its plain state_dict goes: ``out_dir/<registry filename>`` (e.g.
    ``G_unet_2blocks.pth`` for AEI-Net, ``hear_net.pth`` for HEAR-Net)."""
    return {net: Path(out_dir) / REGISTRY[entry].filename for net, entry in recipe.exports.items()}


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in core(model).state_dict().items()}


def read_scalars(out_dir: str | Path, after: int = 0) -> list[dict]:
    """Entries of ``out_dir/scalars.jsonl`` with ``step > after``, in file order."""
    path = Path(out_dir) / "scalars.jsonl"
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as f:
        entries = [json.loads(line) for line in f if line.strip()]
    return [e for e in entries if e["step"] > after]


def sample_grid(rows: list[torch.Tensor]) -> np.ndarray:
    """Rows of images ``(K, 3, S, S)`` RGB in [-1, 1] → one ``(len(rows) S, K S, 3) uint8`` RGB grid."""
    grid = torch.cat([torch.cat(list(r.detach().float().cpu()), dim=2) for r in rows], dim=1)
    return BATCH_RANGE.to_pixels(grid).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


# --------------------------------------------------------------------------------------------- loop


@dataclass
class _Context:
    """Where this loop runs: rank/world, device and how to wrap a trainable network (DDP or not)."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"
    wrap: Callable[[nn.Module], nn.Module] | None = None

    def prepare(self, model: nn.Module) -> nn.Module:
        return self.wrap(model) if self.wrap is not None else model.to(self.device)


class _Trainer:
    """One worker's training state: the recipe (networks, optimisers), data, and (rank 0) the writers."""

    def __init__(self, kind: str, data_dir: Path, out_dir: Path, cfg: dict, ctx: _Context) -> None:
        t = cfg["train"]
        self.kind, self.out_dir, self.cfg, self.ctx = kind, out_dir, cfg, ctx
        self.recipe_class = recipe_class(kind)
        self.arch = self.recipe_class.architecture(cfg)
        self.steps = int(t["steps"])
        self.checkpoint_every = int(t["checkpoint_every"])
        self.sample_every = int(t["sample_every"])
        self.log_every = int(t["log_every"])
        if (
            min(self.steps, self.checkpoint_every, self.sample_every, self.log_every, int(t["batch_size"]))
            < 1
        ):
            raise ConfigError(
                "train.steps, batch_size, checkpoint_every, sample_every and log_every must be >= 1"
            )
        self.data = FaceCrops(data_dir, self.arch["size"])
        self.sampler = PairSampler(
            len(self.data),
            int(t["batch_size"]),
            int(t["seed"]),
            float(t["same_identity_share"]),
            ctx.rank,
            ctx.world,
        )
        torch.manual_seed(int(t["seed"]))
        self.recipe = self.recipe_class(self.arch, cfg, ctx.device, ctx.prepare)
        self.recipe.bind_crops(self.data.files)
        clash = (set(self.recipe.networks) | set(self.recipe.optimizers)) & RESERVED_KEYS
        if clash or set(self.recipe.networks) & set(self.recipe.optimizers):
            raise ValueError(f"recipe {kind}: network/optimiser names collide in the checkpoint: {clash}")
        self.start = self._resume()

    # ------------------------------------------------------------------ checkpoints

    def _resume(self) -> int:
        """Load the latest checkpoint in out_dir (if any); returns its step (0 when starting afresh)."""
        path = latest_checkpoint(self.out_dir)
        if path is None:
            return 0
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # unpickling / zip errors: a damaged checkpoint
            raise InputError(
                f"{path}: not a readable checkpoint ({type(exc).__name__}: "
                f"{(str(exc).splitlines() or [''])[0][:160]}); delete it to resume from the one before"
            ) from None
        if state.get("arch") != self.arch:
            raise ConfigError(
                f"{path} was written for another network layout ({state.get('arch')}), not {self.arch}: "
                "train into a new --out folder or use the same train settings"
            )
        for name, net in self.recipe.networks.items():
            core(net).load_state_dict(state[name], strict=True)
        for name, opt in self.recipe.optimizers.items():
            opt.load_state_dict(state[name])
        torch.set_rng_state(state["rng"]["torch"])
        return int(state["step"])

    def save_checkpoint(self, step: int) -> Path:
        """Write the checkpoint of ``step`` and export the trained networks' plain state_dicts (rank 0)."""
        state: dict[str, Any] = {"step": step, "kind": self.kind, "arch": self.arch}
        state.update({name: _cpu_state(net) for name, net in self.recipe.networks.items()})
        state.update({name: opt.state_dict() for name, opt in self.recipe.optimizers.items()})
        state["rng"] = {"torch": torch.get_rng_state()}
        path = checkpoint_path(self.out_dir, step)
        write_atomic(path, lambda tmp: torch.save(state, tmp))
        self.export()
        return path

    def export(self) -> list[Path]:
        """Each exported network's plain state_dict as its registry file (e.g. ``G_unet_2blocks.pth``)."""
        written = []
        for name, path in export_paths(self.recipe_class, self.out_dir).items():
            weights = _cpu_state(self.recipe.networks[name])
            write_atomic(path, lambda tmp, w=weights: torch.save(w, tmp))
            written.append(path)
        return written

    # ------------------------------------------------------------------ run

    def run(self, progress: bool = False) -> list[dict]:
        """Train steps ``start + 1 .. steps``; returns this call's logged entries (this rank's losses)."""
        lead = self.ctx.rank == 0
        device = self.ctx.device
        history: list[dict] = []
        writer = None
        bar = None
        if lead:
            self._trim_logs()
            from tensorboardX import SummaryWriter

            writer = SummaryWriter(
                str(self.out_dir / "logs"), purge_step=self.start + 1 if self.start else None
            )
            fixed = PairBatch.fixed(self.data, min(SAMPLE_PAIRS, len(self.data)), device)
            if progress and self.start < self.steps:
                from tqdm import tqdm

                bar = tqdm(
                    total=self.steps,
                    initial=self.start,
                    unit="step",
                    desc=f"{PROG} {self.kind}",
                )
        try:
            for step in range(self.start + 1, self.steps + 1):
                began = time.perf_counter()
                batch = PairBatch.draw(self.data, self.sampler, step, device)
                terms = self.recipe.step(batch)
                seconds = time.perf_counter() - began
                if step % self.log_every == 0 or step == self.steps:
                    same = int(batch.same.sum())
                    entry = {"step": step, **terms, "same": same, "seconds": round(seconds, 4)}
                    history.append(entry)
                    if lead:
                        self._log(writer, entry)
                if lead and (step % self.sample_every == 0 or step == self.steps):
                    with torch.no_grad():
                        rows = self.recipe.sample_rows(fixed)
                    write_png(self.out_dir / "samples" / f"step_{step:07d}.png", sample_grid(rows))
                if lead and (step % self.checkpoint_every == 0 or step == self.steps):
                    self.save_checkpoint(step)
                if bar is not None:
                    shown = {k: f"{terms[k]:.3f}" for k in self.recipe_class.progress_terms}
                    bar.set_postfix(shown, refresh=False)
                    bar.update(1)
            if lead and self.start >= self.steps:
                self.export()  # nothing left to train: make sure the exported weights match the checkpoint
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
        return history

    def _trim_logs(self) -> None:
        """Drop scalars.jsonl lines past the resumed step (steps an interrupted run logged after its last
        checkpoint are trained again)."""
        path = self.out_dir / "scalars.jsonl"
        if not path.is_file():
            return
        kept = [e for e in read_scalars(self.out_dir) if e["step"] <= self.start]
        write_atomic(
            path, lambda tmp: tmp.write_text("".join(json.dumps(e) + "\n" for e in kept), encoding="utf-8")
        )

    def _log(self, writer: Any, entry: dict) -> None:
        with open(self.out_dir / "scalars.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
        for key, value in entry.items():
            if key != "step":
                writer.add_scalar(f"{self.kind}/{key}", value, entry["step"])


# --------------------------------------------------------------------------------------------- entry points


def check_inputs(kind: str, data_dir: str | Path, cfg: dict) -> dict[str, Any]:
    """Fail fast, before any network is built or Ray started: config, data folder and weight files."""
    recipe = recipe_class(kind)
    arch = recipe.architecture(cfg)
    FaceCrops(data_dir, arch["size"])
    recipe.check_files(arch, cfg)
    if int(cfg["train"]["workers"]) < 1:
        raise ConfigError(f"train.workers={cfg['train']['workers']} must be >= 1")
    return arch


def train(
    kind: str, data_dir: str | Path, out_dir: str | Path, cfg: dict, *, progress: bool = False
) -> list[dict]:
    """Train recipe ``kind`` (a name in the registry, e.g. ``aei`` | ``hear``) on the crops in ``data_dir``
    into ``out_dir``; see the module doc.

    Returns the history: one dict per logged step of this call (``step`` > the resumed checkpoint's step),
    ``{"step", <the recipe's loss terms>, "same", "seconds"}``: losses of rank 0's batch, ``same`` its
    count of reconstruction pairs, ``seconds`` the step's wall time. AEI's terms are ``g, adv, att, id, rec,
    d, d_real, d_fake``, HEAR's ``g, id, chg, rec`` (unweighted terms, ``g`` the weighted total; ``rec`` over
    the ``same`` pairs, 0 when there are none). Raises SwapstreamError subclasses for unusable data, config
    or weights.
    """
    check_inputs(kind, data_dir, cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    workers = int(cfg["train"]["workers"])
    if workers > 1:
        return _train_ray(kind, Path(data_dir), out, cfg, workers)
    from models.runtime import resolve_device

    torch.set_num_threads(int(cfg["runtime"]["torch_threads"]))
    ctx = _Context(device=resolve_device(cfg["runtime"]["device"]))
    return _Trainer(kind, Path(data_dir), out, cfg, ctx).run(progress)


def _ray_loop(config: dict) -> None:
    """Ray Train worker: the same loop, DDP-wrapped networks, this worker's share of every step's pairs."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    device = ray.train.torch.get_device()
    ctx = _Context(
        rank=context.get_world_rank(),
        world=context.get_world_size(),
        device=str(device),
        wrap=ray.train.torch.prepare_model,
    )
    trainer = _Trainer(config["kind"], Path(config["data_dir"]), Path(config["out_dir"]), config["cfg"], ctx)
    trainer.run(progress=False)


def _train_ray(kind: str, data_dir: Path, out_dir: Path, cfg: dict, workers: int) -> list[dict]:
    """Run :func:`_ray_loop` on ``workers`` Ray Train workers; the history is read back from scalars.jsonl."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipeline.ray_session import init_ray

    started = not ray.is_initialized()
    init_ray(gcs_reconnect_seconds=cfg["ray"]["gcs_reconnect_seconds"])
    device = cfg["runtime"]["device"]
    use_gpu = device == "cuda" or (device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
    latest = latest_checkpoint(out_dir)
    start = int(_CKPT_RE.match(latest.name).group(1)) if latest is not None else 0
    trainer = TorchTrainer(
        _ray_loop,
        train_loop_config={
            "kind": kind,
            "data_dir": str(data_dir.resolve()),
            "out_dir": str(out_dir.resolve()),
            "cfg": cfg,
        },
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=RunConfig(name=f"train-{kind}", storage_path=str((out_dir / "ray").resolve())),
    )
    try:
        trainer.fit()
    finally:
        if started:
            ray.shutdown()
    return read_scalars(out_dir, after=start)
