"""FaceShifter training: AEI-Net (stage 1, adversarial) and HEAR-Net (stage 2, on a frozen AEI-Net).

``python -m pipeline train aei|hear --data CROPS --out DIR [--config FILE] [key=value ...]``

Data: a folder of aligned face crops made by ``python -m pipeline prepare-faces`` (``size``² RGB PNG/JPG, the
ArcFace 5-point template spanning the crop). Each sample is a (target, source) pair of crops; with probability
``train.same_identity_share`` the source IS the target (a reconstruction pair, the only samples L_rec sees),
otherwise it is another crop drawn at random. Losses: :mod:`models.losses`.

Out folder::

    checkpoints/step_XXXXXXX.pt   {"step", "kind", "arch", "model", "optimizer", ["discriminator",
                                  "disc_optimizer"], "rng"}: loadable with torch.load(weights_only=True)
    G_unet_2blocks.pth | hear_net.pth   the trained network as a plain state_dict (models.weights layout)
    scalars.jsonl, logs/          one JSON line per logged step; the same scalars for TensorBoard
    samples/step_XXXXXXX.png      rows: target | source | swapped (HEAR: | AEI-Net swap | refined)

A run resumes from the latest checkpoint in ``out`` (same network layout required) and trains up to
``train.steps``. With ``train.workers > 1`` the same loop runs data-parallel under Ray Train (DDP, gloo on
CPU); ``train.batch_size`` is per worker and rank 0 writes every file (``out`` must be visible to every
worker).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.aei_net import TINY_AEI_CONFIG, AEINet
from models.arcface import IResNet
from models.checkpoints import load_state_dict_file
from models.discriminator import MultiscaleDiscriminator
from models.errors import ConfigError, InputError, ModelFileError
from models.files import write_atomic, write_png
from models.hear_net import TINY_HEAR_CONFIG, HEARNet
from models.losses import (
    AEILossWeights,
    HEARLossWeights,
    aei_generator_loss,
    discriminator_loss,
    hear_loss,
)
from models.weights import REGISTRY, load_configured
from stages.swap_faceshifter import arcface_input

KINDS = ("aei", "hear")
EXPORT_NAMES = {"aei": REGISTRY["aei_net"].filename, "hear": REGISTRY["hear_net"].filename}
CROP_EXTS = frozenset({".png", ".jpg", ".jpeg"})
TINY_IDENTITY_LAYERS = (1, 1, 1, 1)
TINY_IDENTITY_SEED = 20190000  # fixed, so a tiny HEAR run sees the identity space its tiny AEI-Net learnt
SAMPLE_PAIRS = 8
PROG = "train"
_CKPT_RE = re.compile(r"^step_(\d+)\.pt$")


# --------------------------------------------------------------------------------------------- data


class FaceCrops(torch.utils.data.Dataset):
    """All PNG/JPG crops directly in ``folder`` (sorted by name; hidden files skipped).

    Item i: ``(3, size, size) float32`` RGB in [-1, 1] (``x / 127.5 - 1``), bilinearly resized (antialiased)
    when the file has another side. Raises InputError when the folder is missing or holds no crop, or
    (on reading) when a crop is unreadable or not square.
    """

    def __init__(self, folder: str | Path, size: int) -> None:
        self.folder = Path(folder)
        self.size = int(size)
        if not self.folder.is_dir():
            raise InputError(
                f"{self.folder}: no such folder; make crops with `python -m pipeline prepare-faces`"
            )
        self.files = sorted(
            p
            for p in self.folder.iterdir()
            if p.suffix.lower() in CROP_EXTS and not p.name.startswith(".") and p.is_file()
        )
        if not self.files:
            raise InputError(
                f"{self.folder}: no PNG/JPG face crops in it; make them with "
                "`python -m pipeline prepare-faces PHOTOS_OR_VIDEOS --out "
                f"{self.folder}`"
            )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError

        path = self.files[index]
        try:
            with Image.open(path) as im:
                rgb = np.asarray(im.convert("RGB")).copy()
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise InputError(
                f"{path}: not a readable image ({exc}); remove it or make the crops again"
            ) from None
        if rgb.shape[0] != rgb.shape[1]:
            raise InputError(
                f"{path}: crop is {rgb.shape[1]}x{rgb.shape[0]}, not square: not a prepare-faces crop"
            )
        x = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
        if x.shape[-1] != self.size:
            x = F.interpolate(
                x[None], size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True
            )[0].clamp_(-1.0, 1.0)
        return x

    def batch(self, indices: torch.Tensor) -> torch.Tensor:
        """Crops at ``indices`` ``(B,) int64`` → ``(B, 3, size, size) float32`` RGB in [-1, 1]."""
        return torch.stack([self[int(i)] for i in indices])


def _seed_of(*parts: object) -> int:
    """A 63-bit seed derived from ``parts`` (stable across processes and Python versions)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass(frozen=True)
class PairSampler:
    """Stateless, seeded (target, source, same) indices for one worker's batch of a step.

    The targets follow a stream of per-epoch permutations of the ``n`` crops; step s (1-based) of a
    ``world``-worker run takes the next ``world * batch_size`` positions, interleaved over the ranks
    (as ``DistributedSampler`` splits). Each sample's source is its target with probability
    ``same_share``, else another crop drawn uniformly. Everything depends only on (seed, step, rank), so a
    resumed run draws what an uninterrupted one would have.
    """

    n: int
    batch_size: int
    seed: int
    same_share: float
    rank: int = 0
    world: int = 1

    def __post_init__(self) -> None:
        if self.n < 2 and self.same_share < 1.0:
            raise InputError(f"need at least 2 face crops to draw (target, source) pairs, found {self.n}")
        if not 0.0 <= self.same_share <= 1.0:
            raise ConfigError(f"train.same_identity_share={self.same_share} must be in [0, 1]")

    def _permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(_seed_of(self.seed, "epoch", epoch))
        return torch.randperm(self.n, generator=g)

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Step ``step`` (1-based) → target ``(B,) int64``, source ``(B,) int64``, same ``(B,) bool``."""
        b = self.batch_size
        positions = [(step - 1) * self.world * b + i * self.world + self.rank for i in range(b)]
        perms: dict[int, torch.Tensor] = {}
        targets = []
        for q in positions:
            epoch = q // self.n
            if epoch not in perms:
                perms[epoch] = self._permutation(epoch)
            targets.append(int(perms[epoch][q % self.n]))
        target = torch.tensor(targets, dtype=torch.int64)
        g = torch.Generator().manual_seed(_seed_of(self.seed, "pairs", step, self.rank))
        same = torch.rand(b, generator=g) < self.same_share
        other = torch.randint(0, max(self.n - 1, 1), (b,), generator=g)
        other = other + (other >= target).long()  # skip the target itself
        source = torch.where(same, target, other.clamp(max=self.n - 1))
        return target, source, source == target


# --------------------------------------------------------------------------------------------- networks


def architecture(kind: str, cfg: dict) -> dict[str, Any]:
    """The network layout ``train`` builds for ``kind`` from ``cfg["train"]``: a plain dict (stored in every
    checkpoint and compared on resume). ConfigError for impossible settings."""
    if kind not in KINDS:
        raise ConfigError(f"train kind must be one of {', '.join(KINDS)}, got {kind!r}")
    t = cfg["train"]
    size = int(t["size"])
    if t["tiny"]:
        if size != TINY_AEI_CONFIG["size"]:
            raise ConfigError(
                f"train.tiny=true trains {TINY_AEI_CONFIG['size']} px networks: set train.size=64"
            )
        aei = dict(TINY_AEI_CONFIG)
        hear = dict(TINY_HEAR_CONFIG)
        identity = {"tiny": True, "layers": list(TINY_IDENTITY_LAYERS)}
    else:
        aei = {"size": size, "base": int(t["aei_base"]), "num_blocks": int(t["aei_num_blocks"])}
        hear = {"base": int(t["hear_base"])}
        identity = {"tiny": False, "name": cfg["faceshifter"]["arcface"]}
    if size < 32 or size & (size - 1):
        raise ConfigError(f"train.size={size} must be a power of two >= 32")
    arch: dict[str, Any] = {"kind": kind, "size": size, "aei": aei, "identity": identity}
    if kind == "aei":
        arch["disc"] = {
            "ndf": int(t["disc_ndf"]),
            "n_layers": int(t["disc_layers"]),
            "num_d": int(t["disc_scales"]),
        }
    else:
        arch["hear"] = hear
    return arch


def identity_encoder(arch: dict[str, Any], cfg: dict, device: str) -> nn.Module:
    """The frozen identity network (eval mode, no gradients) on ``device``.

    Tiny: ``IResNet((1, 1, 1, 1))`` with a fixed random init (the same in every tiny run). Otherwise the
    registry's ArcFace (``faceshifter.arcface``) from ``weights.dir``; ModelFileError if missing.
    """
    if arch["identity"]["tiny"]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TINY_IDENTITY_SEED)
            net: nn.Module = IResNet(TINY_IDENTITY_LAYERS)
    else:
        try:
            net = load_configured(cfg["faceshifter"]["arcface"], cfg, "cpu")
        except ModelFileError as exc:
            raise ModelFileError(
                f"training needs the frozen identity encoder: {exc} (or use train.tiny=true for a smoke run)"
            ) from None
    return net.eval().requires_grad_(False).to(device)


def frozen_aei(arch: dict[str, Any], cfg: dict, device: str) -> AEINet:
    """HEAR-Net training's frozen AEI-Net from ``train.aei_checkpoint`` (strict load), eval, no gradients."""
    path = str(cfg["train"]["aei_checkpoint"] or "")
    if not path:
        raise ConfigError(
            "train hear needs the AEI-Net it refines: set train.aei_checkpoint=PATH to the "
            f"{EXPORT_NAMES['aei']} that `train aei` exported (same train.tiny/size/widths)"
        )
    net = AEINet(**arch["aei"])
    try:
        load_state_dict_file(net, path)
    except ValueError as exc:
        raise ConfigError(
            f"train.aei_checkpoint: {exc}; give the {EXPORT_NAMES['aei']} of a `train aei` run with the same "
            "train.tiny, size and widths"
        ) from None
    return net.eval().requires_grad_(False).to(device)


def _core(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (or the network itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# --------------------------------------------------------------------------------------------- files


def checkpoint_path(out_dir: str | Path, step: int) -> Path:
    """``out_dir/checkpoints/step_XXXXXXX.pt``."""
    return Path(out_dir) / "checkpoints" / f"step_{step:07d}.pt"


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The checkpoint with the highest step in ``out_dir/checkpoints`` (None when there is none)."""
    folder = Path(out_dir) / "checkpoints"
    found = [(int(m.group(1)), p) for p in folder.glob("step_*.pt") if (m := _CKPT_RE.match(p.name))]
    return max(found)[1] if found else None


def export_path(kind: str, out_dir: str | Path) -> Path:
    """Where the trained network's plain state_dict goes: ``G_unet_2blocks.pth`` | ``hear_net.pth``."""
    return Path(out_dir) / EXPORT_NAMES[kind]


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in _core(model).state_dict().items()}


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
    return grid.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


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
    """One worker's training state: networks, optimisers, data, and (rank 0) the writers."""

    def __init__(self, kind: str, data_dir: Path, out_dir: Path, cfg: dict, ctx: _Context) -> None:
        t = cfg["train"]
        self.kind, self.out_dir, self.cfg, self.ctx = kind, out_dir, cfg, ctx
        self.arch = architecture(kind, cfg)
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
        device = ctx.device
        torch.manual_seed(int(t["seed"]))
        self.identity = identity_encoder(self.arch, cfg, device)
        adam = {"lr": float(t["lr"]), "betas": (float(t["beta1"]), float(t["beta2"]))}
        self.disc: nn.Module | None = None
        self.opt_d: torch.optim.Optimizer | None = None
        self.aei: AEINet | None = None
        if kind == "aei":
            self.model = ctx.prepare(AEINet(**self.arch["aei"]).train())
            self.disc = ctx.prepare(MultiscaleDiscriminator(**self.arch["disc"]).train())
            self.opt_d = torch.optim.Adam(self.disc.parameters(), **adam)
            self.weights_aei = AEILossWeights(
                att=float(t["lambda_att"]), id=float(t["lambda_id"]), rec=float(t["lambda_rec"])
            )
        else:
            self.aei = frozen_aei(self.arch, cfg, device)
            self.model = ctx.prepare(HEARNet(**self.arch["hear"]).train())
            self.weights_hear = HEARLossWeights(
                chg=float(t["hear_lambda_chg"]), rec=float(t["hear_lambda_rec"])
            )
        self.opt = torch.optim.Adam(self.model.parameters(), **adam)
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
        _core(self.model).load_state_dict(state["model"], strict=True)
        self.opt.load_state_dict(state["optimizer"])
        if self.disc is not None and self.opt_d is not None:
            _core(self.disc).load_state_dict(state["discriminator"], strict=True)
            self.opt_d.load_state_dict(state["disc_optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        return int(state["step"])

    def save_checkpoint(self, step: int) -> Path:
        """Write the checkpoint of ``step`` and export the network's plain state_dict (rank 0 only)."""
        state: dict[str, Any] = {
            "step": step,
            "kind": self.kind,
            "arch": self.arch,
            "model": _cpu_state(self.model),
            "optimizer": self.opt.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
        }
        if self.disc is not None and self.opt_d is not None:
            state["discriminator"] = _cpu_state(self.disc)
            state["disc_optimizer"] = self.opt_d.state_dict()
        path = checkpoint_path(self.out_dir, step)
        write_atomic(path, lambda tmp: torch.save(state, tmp))
        self.export()
        return path

    def export(self) -> Path:
        """``G_unet_2blocks.pth`` (AEI) or ``hear_net.pth`` (HEAR): the network's plain state_dict."""
        path = export_path(self.kind, self.out_dir)
        weights = _cpu_state(self.model)
        write_atomic(path, lambda tmp: torch.save(weights, tmp))
        return path

    # ------------------------------------------------------------------ steps

    def _identity(self, images: torch.Tensor) -> torch.Tensor:
        return self.identity(arcface_input(images))

    def step_aei(self, xt: torch.Tensor, xs: torch.Tensor, same: torch.Tensor) -> dict[str, float]:
        """One generator + one discriminator update; returns the loss terms."""
        assert self.disc is not None and self.opt_d is not None
        with torch.no_grad():
            z_s = self._identity(xs)
        y, attr_t = self.model(xt, z_s)
        attr_y = _core(self.model).get_attributes(y)
        disc = _core(self.disc)
        disc.requires_grad_(False)  # the generator step needs no discriminator gradients
        fake = disc(y)
        loss_g, terms = aei_generator_loss(
            fake, self._identity(y), z_s, attr_y, attr_t, y, xt, same, self.weights_aei
        )
        self.opt.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt.step()
        disc.requires_grad_(True)
        # One pass over real sources and detached fakes (the norms are per-sample, so this equals two passes).
        logits = self.disc(torch.cat((xs, y.detach())))
        n = len(xs)
        loss_d, d_terms = discriminator_loss([m[:n] for m in logits], [m[n:] for m in logits])
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        return {**terms, **d_terms}

    def hear_inputs(
        self, xt: torch.Tensor, xs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """HEAR-Net's inputs from the frozen networks: (source identity ``(N, D)``, AEI swap Ŷ(s,t),
        heuristic error X_t - Ŷ(t,t)), images ``(N, 3, S, S)``."""
        assert self.aei is not None
        with torch.no_grad():
            z_s, z_t = self._identity(xs), self._identity(xt)
            swapped, _ = self.aei(xt, z_s)
            recon, _ = self.aei(xt, z_t)
        return z_s, swapped, HEARNet.heuristic_error(xt, recon)

    def step_hear(self, xt: torch.Tensor, xs: torch.Tensor, same: torch.Tensor) -> dict[str, float]:
        """One HEAR-Net update; returns the loss terms."""
        z_s, swapped, error = self.hear_inputs(xt, xs)
        refined = self.model(swapped, error)
        loss, terms = hear_loss(self._identity(refined), z_s, refined, swapped, xt, same, self.weights_hear)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return terms

    @torch.no_grad()
    def samples(self, targets: torch.Tensor, sources: torch.Tensor) -> np.ndarray:
        """The sample grid for fixed pairs (networks in eval mode, as exported)."""
        core = _core(self.model)
        core.eval()
        try:
            z_s = self._identity(sources)
            if self.kind == "aei":
                swapped, _ = core(targets, z_s)
                rows = [targets, sources, swapped]
            else:
                _, swapped, error = self.hear_inputs(targets, sources)
                rows = [targets, sources, swapped, core(swapped, error)]
        finally:
            core.train()
        return sample_grid(rows)

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
            k = min(SAMPLE_PAIRS, len(self.data))
            fixed_t = self.data.batch(torch.arange(k)).to(device)
            fixed_s = self.data.batch(torch.roll(torch.arange(k), -1)).to(device)
            if progress and self.start < self.steps:
                from tqdm import tqdm

                bar = tqdm(
                    total=self.steps,
                    initial=self.start,
                    unit="step",
                    desc=f"{PROG} {self.kind}",
                )
        step_fn = self.step_aei if self.kind == "aei" else self.step_hear
        try:
            for step in range(self.start + 1, self.steps + 1):
                began = time.perf_counter()
                t_idx, s_idx, same = self.sampler(step)
                xt = self.data.batch(t_idx).to(device)
                xs = self.data.batch(s_idx).to(device)
                terms = step_fn(xt, xs, same.to(device))
                seconds = time.perf_counter() - began
                if step % self.log_every == 0 or step == self.steps:
                    entry = {"step": step, **terms, "same": int(same.sum()), "seconds": round(seconds, 4)}
                    history.append(entry)
                    if lead:
                        self._log(writer, entry)
                if lead and (step % self.sample_every == 0 or step == self.steps):
                    write_png(
                        self.out_dir / "samples" / f"step_{step:07d}.png", self.samples(fixed_t, fixed_s)
                    )
                if lead and (step % self.checkpoint_every == 0 or step == self.steps):
                    self.save_checkpoint(step)
                if bar is not None:
                    bar.set_postfix(g=f"{terms['g']:.3f}", rec=f"{terms['rec']:.3f}", refresh=False)
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


def _check_inputs(kind: str, data_dir: str | Path, cfg: dict) -> dict[str, Any]:
    """Fail fast, before any network is built or Ray started: config, data folder and weight files."""
    arch = architecture(kind, cfg)
    FaceCrops(data_dir, arch["size"])
    if kind == "hear":
        path = cfg["train"]["aei_checkpoint"]
        if not path:
            raise ConfigError(
                f"train hear needs train.aei_checkpoint=PATH (the {EXPORT_NAMES['aei']} `train aei` exported)"
            )
        if not Path(path).is_file():
            raise ModelFileError(
                f"{path}: train.aei_checkpoint not found (the {EXPORT_NAMES['aei']} of `train aei`)"
            )
    if not arch["identity"]["tiny"]:
        from models.weights import locate_configured

        try:
            locate_configured(cfg["faceshifter"]["arcface"], cfg)
        except ModelFileError as exc:
            raise ModelFileError(
                f"training needs the frozen identity encoder: {exc} (or use train.tiny=true for a smoke run)"
            ) from None
    if int(cfg["train"]["workers"]) < 1:
        raise ConfigError(f"train.workers={cfg['train']['workers']} must be >= 1")
    return arch


def train(
    kind: str, data_dir: str | Path, out_dir: str | Path, cfg: dict, *, progress: bool = False
) -> list[dict]:
    """Train ``kind`` (``aei`` | ``hear``) on the crops in ``data_dir`` into ``out_dir``; see the module doc.

    Returns the history: one dict per logged step of this call (``step`` > the resumed checkpoint's step),
    AEI ``{"step", "g", "adv", "att", "id", "rec", "d", "d_real", "d_fake", "same", "seconds"}``, HEAR
    ``{"step", "g", "id", "chg", "rec", "same", "seconds"}``: losses of rank 0's batch (unweighted terms,
    ``g`` the weighted total; ``rec`` over its ``same`` reconstruction pairs, 0 when there are none),
    ``seconds`` the step's wall time. Raises SwapstreamError subclasses for unusable data, config or weights.
    """
    _check_inputs(kind, data_dir, cfg)
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

    from pipeline.executors import init_ray

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


def _summary(kind: str, history: list[dict], out_dir: Path, seconds: float) -> str:
    exported = export_path(kind, out_dir)
    if not history:
        return f"{PROG} {kind}: nothing to do (already at train.steps) -> {exported}"
    first, last = history[0], history[-1]
    per_step = sum(e["seconds"] for e in history) / len(history)
    return (
        f"{PROG} {kind}: steps {first['step']}..{last['step']} in {seconds:.1f} s "
        f"({per_step:.2f} s/step), loss {first['g']:.4f} -> {last['g']:.4f} -> {exported}"
    )


def main(argv: list[str] | None = None) -> int:
    """``train aei|hear --data DIR --out DIR [--config FILE] [--quiet] [key=value ...]``.

    Exit 0 when done, 2 (one-line error) on unusable data, config or weights, 130 when interrupted
    (the latest checkpoint stays; run the same command again to resume)."""
    parser = argparse.ArgumentParser(
        prog=f"python -m pipeline {PROG}",
        description="train FaceShifter's AEI-Net (aei) or, on top of it, HEAR-Net (hear) on face crops",
    )
    parser.add_argument("kind", choices=KINDS, help="aei: stage 1 generator; hear: stage 2 refinement")
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
