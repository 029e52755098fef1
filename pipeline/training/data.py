"""Training data: a folder of aligned face crops, seeded (target, source) pairs and the batches a recipe gets.

The crops are made by ``python -m pipeline prepare-faces`` (``size``² RGB PNG/JPG). Each sample is a
(target, source) pair of crops; with probability ``train.same_identity_share`` the source IS the target (a
reconstruction pair), otherwise it is another crop drawn at random.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.errors import ConfigError, InputError
from models.pixels import SIGNED, Normalisation

# The range of every training batch: x/127.5 - 1, as GHOST's generator is fed (the registry's aei_net entry)
BATCH_RANGE: Normalisation = SIGNED

CROP_EXTS = frozenset({".png", ".jpg", ".jpeg"})


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
        x = BATCH_RANGE.to_network(torch.from_numpy(rgb).permute(2, 0, 1).float())
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


@dataclass(frozen=True)
class PairBatch:
    """One worker's batch of a step, on the training device; what :meth:`Recipe.step` receives.

    target, source: ``(B, 3, S, S) float32`` RGB (channel order R, G, B) in [-1, 1] (``pixel / 127.5 - 1``),
    S = the recipe's ``architecture(cfg)["size"]``. same: ``(B,) bool``, True where the source crop IS the
    target crop (a reconstruction pair: ``source[i]`` equals ``target[i]``). target_index, source_index:
    ``(B,) int64`` (CPU) the crops' positions in :attr:`FaceCrops.files`, for recipes that look up
    per-crop data (RSGAN's attribute labels); None where a batch was built otherwise.
    """

    target: torch.Tensor
    source: torch.Tensor
    same: torch.Tensor
    target_index: torch.Tensor | None = None
    source_index: torch.Tensor | None = None

    @classmethod
    def draw(cls, data: FaceCrops, sampler: PairSampler, step: int, device: str) -> PairBatch:
        """Step ``step``'s batch of ``sampler`` read from ``data`` and moved to ``device``."""
        t_idx, s_idx, same = sampler(step)
        return cls(data.batch(t_idx).to(device), data.batch(s_idx).to(device), same.to(device), t_idx, s_idx)

    @classmethod
    def fixed(cls, data: FaceCrops, k: int, device: str) -> PairBatch:
        """The sample grids' fixed pairs: crops 0..k-1 as targets, each with the next crop as source."""
        idx = torch.arange(k)
        same = torch.zeros(k, dtype=torch.bool) if k > 1 else torch.ones(k, dtype=torch.bool)
        s_idx = torch.roll(idx, -1)
        return cls(data.batch(idx).to(device), data.batch(s_idx).to(device), same.to(device), idx, s_idx)
