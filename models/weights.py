"""Registry of the learned models swapstream can load: file, hash, origin and input conventions.

Learned swap models are user-supplied (nothing is downloaded at run time). ``python -m pipeline weights``
(``make weights``) fetches the files that have a public address and checks their hashes; every other file
is put in ``weights.dir`` by the user. A known sha256 is checked on load; where the public file's hash is
not known to us it is printed on download, so a user can pin it with ``weights.sha256.<name>=...``.
"""

from __future__ import annotations

import contextlib
import shutil
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from models.checkpoints import checked_state_dict, load_state_dict_file
from models.errors import ModelFileError, WeightFileError
from models.files import sha256_of, write_atomic
from models.pixels import IMAGENET, SIGNED, SIGNED_FROM_UNIT, UNIT, Normalisation


@dataclass(frozen=True)
class WeightFile:
    """One checkpoint and what its network expects.

    network: factory name in :func:`build_network`. crop_size: side of the network's input crop.
    template: the crop it was trained on, as ``align.template`` names it (``arcface``: the 5-point ArcFace
    layout spanning ``face_scale`` of the crop; ``ghost``: GHOST's pose-template crop,
    :func:`stages.align.alignment`; other text: a description). normalisation: how RGB pixel values become
    the network's input (:mod:`models.pixels`; the code that feeds the network reads it from here).
    state_key: the file is a dict whose entry ``state_key`` is the state_dict (as its public training code
    saves it); None: the file is the plain state_dict. Nothing else is ever unwrapped. layout: for a network
    trained here at several sizes, the config section whose keys give its layout (the factory's keyword
    arguments, a dotted path such as ``edit.e4e``; the file must come from a run with the same ones; a
    public file's layout is the section's default); None: one fixed layout.
    """

    name: str
    filename: str
    network: str
    sha256: str | None
    url: str | None
    obtain: str
    crop_size: int
    template: str = "arcface"
    face_scale: float = 1.0
    normalisation: Normalisation = SIGNED_FROM_UNIT
    state_key: str | None = None
    legacy_batchnorm: bool = False  # saved before BatchNorm had num_batches_tracked (PyTorch < 0.4.1)
    layout: str | None = None
    drop_keys: tuple[str, ...] = ()  # entries the public loader deletes before its strict load


_GHOST = "https://github.com/sberbank-ai/sber-swap/releases/download"

REGISTRY: dict[str, WeightFile] = {
    w.name: w
    for w in [
        WeightFile(
            name="arcface_iresnet100",
            filename="backbone.pth",
            network="iresnet100",
            sha256=None,
            url=f"{_GHOST}/arcface/backbone.pth",
            obtain="GHOST release 'arcface' (arcface_model/backbone.pth) or arcface_torch r100 backbone.pth",
            crop_size=112,
        ),
        WeightFile(
            name="arcface_iresnet50",
            filename="arcface_r50_backbone.pth",
            network="iresnet50",
            sha256=None,
            url=None,
            obtain="arcface_torch model zoo r50 backbone.pth, renamed to arcface_r50_backbone.pth",
            crop_size=112,
        ),
        WeightFile(
            name="aei_net",
            filename="G_unet_2blocks.pth",
            network="aei_net",
            sha256=None,
            url=f"{_GHOST}/sber-swap-v2.0/G_unet_2blocks.pth",
            obtain="GHOST release 'sber-swap-v2.0' (weights/G_unet_2blocks.pth), or our trainer's generator",
            crop_size=256,
            template="ghost",
            normalisation=SIGNED,
        ),
        WeightFile(
            name="hear_net",
            filename="hear_net.pth",
            network="hear_net",
            sha256=None,
            url=None,
            obtain="no public checkpoint: train one with `python -m pipeline train hear`",
            crop_size=256,
            template="ghost",
            normalisation=SIGNED,
        ),
        WeightFile(
            name="face_parser_bisenet",
            filename="79999_iter.pth",
            network="bisenet19",
            sha256=None,
            url=None,
            obtain="face-parsing.PyTorch (zllrunning) README: the shared pretrained 79999_iter.pth",
            crop_size=512,
            template="face crop resized to 512",
            normalisation=IMAGENET,
        ),
        WeightFile(
            name="hopenet",
            filename="hopenet_robust_alpha1.pkl",
            network="hopenet",
            sha256=None,
            url=None,
            obtain="deep-head-pose (natanielruiz) README: 300W-LP alpha 1 (hopenet_robust_alpha1.pkl)",
            crop_size=224,
            template="face box enlarged, resized to 224",
            normalisation=IMAGENET,
            legacy_batchnorm=True,
        ),
        WeightFile(
            name="face_recon",
            filename="epoch_20.pth",
            network="face_recon_resnet50",
            sha256=None,
            url=None,
            obtain="Deep3DFaceRecon_pytorch (sicxu) pretrained model: checkpoints/<name>/epoch_20.pth",
            crop_size=224,
            template="5-point similarity to the Deep3DFaceRecon 3D template",
            normalisation=UNIT,
            state_key="net_recon",
        ),
        WeightFile(
            name="stylegan2_ffhq",
            filename="stylegan2-ffhq-config-f.pt",
            network="stylegan2_ffhq_1024",
            sha256=None,
            url=None,
            obtain="rosinality/stylegan2-pytorch README: the converted FFHQ config-f checkpoint "
            "(stylegan2-ffhq-config-f.pt), or NVIDIA's stylegan2-ffhq-config-f.pkl through its "
            "convert_weight.py",
            crop_size=1024,
            template="FFHQ alignment (the generator's output, not an input)",
            normalisation=SIGNED,
            state_key="g_ema",
            layout="stylegan2",
        ),
        WeightFile(
            name="e4e_encoder",
            filename="e4e_state.pt",
            network="e4e_encoder",
            sha256=None,
            url=None,
            obtain="MaskFaceGAN (MartinPernus) download script: models/e4e/state.pt, renamed to e4e_state.pt "
            "(e4e's FFHQ encoder repacked without the pSp prefix)",
            crop_size=256,
            template="FFHQ alignment (dlib 68 points), resized to 256",
            normalisation=SIGNED_FROM_UNIT,
            state_key="encoder_state_dict",
            layout="edit.e4e",
        ),
        WeightFile(
            name="maskfacegan_parser",
            filename="maskfacegan_face_parser.pt",
            network="maskfacegan_parser",
            sha256=None,
            url=None,
            obtain="MaskFaceGAN (MartinPernus) download script: models/face_parser/state.pt, renamed to "
            "maskfacegan_face_parser.pt",
            crop_size=512,
            template="FFHQ-aligned face, area-resized to 512",
            normalisation=SIGNED_FROM_UNIT,
            drop_keys=("loss.weight",),
            layout="edit.parser",
        ),
        WeightFile(
            name="maskfacegan_classifier",
            filename="maskfacegan_attribute_classifier.pt",
            network="branched_tiny",
            sha256=None,
            url=None,
            obtain="MaskFaceGAN (MartinPernus) download script: models/attribute_classifier/state.pt, "
            "renamed to maskfacegan_attribute_classifier.pt",
            crop_size=224,
            template="FFHQ-aligned face, area-resized to 224",
            normalisation=UNIT,
            layout="edit.classifier",
        ),
        WeightFile(
            name="vgg16_imagenet",
            filename="vgg16-397923af.pth",
            network="vgg16_features",
            sha256=None,
            url=None,
            obtain="torchvision's ImageNet VGG16 weights, e.g. from the torch hub cache "
            "(~/.cache/torch/hub/checkpoints/) after torchvision.models.vgg16(weights='IMAGENET1K_V1'); "
            "the trunk of LPIPS (models/lpips.py)",
            crop_size=224,
            template="any RGB image: LPIPS compares whole images (MaskFaceGAN: its 1024 px FFHQ crops)",
            # what the trunk was trained on; LPIPS's scaling layer is the same map written as
            # (x/127.5 - 1 - (2 mean - 1)) / (2 std) with the constants to three decimals
            normalisation=IMAGENET,
            drop_keys=tuple(f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")),
        ),
        WeightFile(
            name="latent_swap",
            filename="latent_swap.pth",
            network="latent_swap",
            sha256=None,
            url=None,
            obtain="no public checkpoint: train one with `python -m pipeline train latent` "
            "(make train-latent)",
            crop_size=256,
            template="ffhq",
            normalisation=SIGNED,
            layout="latent.layout",
        ),
        WeightFile(
            name="rsgan",
            filename="rsgan.pth",
            network="rsgan",
            sha256=None,
            url=None,
            obtain="no public checkpoint: train one with `python -m pipeline train rsgan` (make train-rsgan)",
            crop_size=128,
            template="ghost",
            normalisation=SIGNED,
            layout="rsgan.layout",
        ),
        WeightFile(
            name="rsgan_discriminator",
            filename="rsgan_discriminator.pth",
            network="rsgan_discriminator",
            sha256=None,
            url=None,
            obtain="no public checkpoint: `python -m pipeline train rsgan` exports it beside rsgan.pth",
            crop_size=128,
            template="ghost",
            normalisation=SIGNED,
            layout="rsgan.layout",
        ),
        WeightFile(
            name="wsc_generator",
            filename="wsc_generator.pth",
            network="wsc_generator",
            sha256=None,
            url=None,
            obtain="no public checkpoint: train one with `python -m pipeline train wsc` (make train-wsc)",
            crop_size=256,
            template="ghost",
            normalisation=SIGNED,
            layout="wsc",
        ),
    ]
}


def locate(name: str, weights_dir: str | Path, expected_sha256: str | None = None) -> Path:
    """Path of registry entry ``name`` inside ``weights_dir``, its hash checked when one is known.

    Raises ModelFileError naming the file, the folder and how to get it.
    """
    if name not in REGISTRY:
        raise ModelFileError(f"unknown model {name!r}: known models are {', '.join(REGISTRY)}")
    entry = REGISTRY[name]
    path = Path(weights_dir) / entry.filename
    if not path.is_file():
        how = "run `make weights`" if entry.url else entry.obtain
        raise ModelFileError(f"{path}: {name} weights missing; put {entry.filename} in {weights_dir} ({how})")
    expected = expected_sha256 or entry.sha256
    if expected:
        actual = sha256_of(path)
        if actual != expected.lower():
            raise ModelFileError(
                f"{path}: sha256 {actual[:16]}… does not match the expected {expected[:16]}…; "
                "the file is damaged or a different model: fetch it again"
            )
    return path


def download(name: str, weights_dir: str | Path) -> tuple[Path, str]:
    """Fetch a registry entry that has a public address into ``weights_dir``; returns (path, sha256).

    Written under a temporary name and renamed when complete and verified.
    """
    entry = REGISTRY[name]
    if entry.url is None:
        raise ModelFileError(f"{entry.filename}: no public address known; {entry.obtain}")
    folder = Path(weights_dir)
    final = folder / entry.filename
    digests: list[str] = []

    def fetch(tmp: Path) -> None:  # the hash is checked before the rename: a bad file never lands
        with open(tmp, "wb") as out, urllib.request.urlopen(entry.url, timeout=60) as response:
            shutil.copyfileobj(response, out)
        digests.append(sha256_of(tmp))
        if entry.sha256 and digests[0] != entry.sha256:
            raise ModelFileError(
                f"{entry.url}: downloaded file has sha256 {digests[0]}, expected {entry.sha256}"
            )

    try:
        write_atomic(final, fetch)
    except OSError as exc:
        raise ModelFileError(
            f"{entry.url}: download failed ({exc}); put {entry.filename} in {folder} by hand"
        ) from None
    return final, digests[0]


# A registry entry's ``network`` -> the module and factory that build it (imported when first needed):
# a new network is one module under models/ plus one line here.
NETWORKS: dict[str, tuple[str, str]] = {
    "iresnet100": ("models.arcface", "iresnet100"),
    "iresnet50": ("models.arcface", "iresnet50"),
    "aei_net": ("models.aei_net", "AEINet"),
    "hear_net": ("models.hear_net", "HEARNet"),
    "bisenet19": ("models.bisenet", "bisenet19"),
    "hopenet": ("models.hopenet", "hopenet"),
    "face_recon_resnet50": ("models.face_recon", "face_recon_resnet50"),
    "wsc_generator": ("models.wsc_net", "wsc_generator"),
    "latent_swap": ("models.latent_swap", "latent_swap"),
    "rsgan": ("models.rsgan", "rsgan"),
    "rsgan_discriminator": ("models.rsgan", "rsgan_discriminator"),
    "stylegan2_ffhq_1024": ("models.stylegan2", "stylegan2_ffhq_1024"),
    "e4e_encoder": ("models.e4e", "e4e_encoder"),
    "maskfacegan_parser": ("models.deeplab_parser", "maskfacegan_parser"),
    "branched_tiny": ("models.attribute_classifier", "branched_tiny"),
    "vgg16_features": ("models.lpips", "VGG16Features"),
}


def build_network(network: str, layout: dict | None = None) -> torch.nn.Module:
    """A freshly initialised network for a registry entry's ``network`` name (:data:`NETWORKS`), of
    ``layout`` (the factory's keyword arguments) when given."""
    import importlib

    module, factory = NETWORKS[network]
    return getattr(importlib.import_module(module), factory)(**(layout or {}))


@contextlib.contextmanager
def _layout_hint(entry: WeightFile) -> Iterator[None]:
    """A file that does not fit an entry with a configured layout: say where the layout comes from."""
    try:
        yield
    except WeightFileError as exc:
        if entry.layout is None:
            raise
        raise WeightFileError(
            f"{exc}; the layout comes from the config's {entry.layout}: section, which must be that of the "
            "run that made the file (the defaults: the public file's)"
        ) from None


def layout_of(name: str, cfg: dict) -> dict | None:
    """The layout registry entry ``name``'s network is built with under ``cfg``: its ``layout`` config
    section (a copy), or None for a fixed-layout network."""
    section = REGISTRY[name].layout
    if not section:
        return None
    node = cfg
    for key in section.split("."):
        node = node[key]
    return dict(node)


def load_network(
    name: str,
    weights_dir: str | Path,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    expected_sha256: str | None = None,
    layout: dict | None = None,
) -> torch.nn.Module:
    """Build registry entry ``name``'s network (of ``layout``, for an entry that has one) and load its
    checkpoint from ``weights_dir`` strictly.

    Returns the network in eval mode, gradients off, on ``device`` in ``dtype``. A missing or damaged
    file raises ModelFileError; a file of another layout raises ValueError naming the first bad key.
    """
    path = locate(name, weights_dir, expected_sha256)
    entry = REGISTRY[name]
    net = build_network(entry.network, layout)
    with _layout_hint(entry):
        load_state_dict_file(net, path, entry.state_key, entry.legacy_batchnorm, entry.drop_keys)
    net.eval().requires_grad_(False)
    return net.to(device=device, dtype=dtype)


def pinned_sha256(name: str, cfg: dict) -> str | None:
    """The sha256 the user pinned for ``name`` in ``weights.sha256`` (None when not pinned)."""
    return (cfg["weights"].get("sha256") or {}).get(name) or None


def locate_configured(name: str, cfg: dict) -> Path:
    """:func:`locate` with ``weights.dir`` and any pinned hash from the config."""
    return locate(name, cfg["weights"]["dir"], pinned_sha256(name, cfg))


def verify_configured(name: str, cfg: dict) -> Path:
    """:func:`locate_configured`, then the file's keys and shapes checked against the network without
    loading its values (a ``meta``-device network, the file memory-mapped): a damaged, cut-short or foreign
    file stops with its one-line error before any work, not in a worker later. Returns the path."""
    path = locate_configured(name, cfg)
    entry = REGISTRY[name]
    with torch.device("meta"):
        net = build_network(entry.network, layout_of(name, cfg))
    with _layout_hint(entry):
        checked_state_dict(
            net, path, entry.state_key, entry.legacy_batchnorm, mmap=True, drop_keys=entry.drop_keys
        )
    return path


def load_configured(
    name: str, cfg: dict, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> torch.nn.Module:
    """:func:`load_network` with ``weights.dir``, any pinned hash and the layout from the config."""
    return load_network(
        name, cfg["weights"]["dir"], device, dtype, pinned_sha256(name, cfg), layout_of(name, cfg)
    )
