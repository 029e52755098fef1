"""Our networks and GHOST's crop against the reference vectors in ``../shared/interop/vectors``.

Each vector file holds outputs of the public reference code run with the recipe's deterministic weights
(``../shared/interop/VECTORS.md``). A network passes when, loaded with exactly those weights
(``strict=True``) and fed the stored inputs, ``max|ours - ref| / max|ref| <= 1e-4`` on every stored output.
GHOST's crop passes when the keypoints land within 0.25 px of GHOST's in the 256 crop and the generator
and ArcFace inputs are within PSNR 30 dB (range 2) of the stored ones; ours are equal to them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.aei_net import AEINet
from models.arcface import iresnet50, iresnet100
from models.bisenet import bisenet19
from models.weights import REGISTRY
from pipeline.config import CONFIG_DIR, load_config
from stages.align import AlignStage
from stages.geometry import (
    GHOST_POSE_TEMPLATES,
    ghost_alignment,
    ghost_crops,
    resize_affine,
    transform_points,
)
from stages.swap_faceshifter import ghost_identity_input, to_signed
from stages.types import FaceRecord, FrameBatch
from tests.model_fixtures import INTEROP, interop_vectors, recipe_weights

TOLERANCE = 1e-4  # max|ours - ref| / max|ref|, VECTORS.md
# AEI-Net's swapped face in float32 only (test_aei_net_matches_reference); the float64 run meets TOLERANCE.
AEI_FLOAT32_Y_TOLERANCE = 1e-3
KEYPOINT_TOLERANCE_PX = 0.25
MIN_PSNR_DB = 30.0

# Vector files of networks we have not written yet (StyleGAN2, e4e and MaskFaceGAN's classifier and parser
# come with the MaskFaceGAN issue, whose tests check them). A file in neither set fails
# test_every_vector_file_is_checked.
PENDING: set[str] = set()
CHECKED = {
    "aei_net",
    "arcface_iresnet100",
    "arcface_iresnet50",
    "bisenet",
    "e4e_encoder",
    "ghost_preprocess",
    "maskfacegan_classifier",
    "maskfacegan_parser",
    "stylegan2_1024",
    "stylegan2_256",
}


def rel_error(ours: torch.Tensor | np.ndarray, ref: np.ndarray) -> float:
    """``max|ours - ref| / max|ref|`` in float64."""
    a = ours.detach().double().numpy() if isinstance(ours, torch.Tensor) else np.asarray(ours, np.float64)
    b = np.asarray(ref, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / np.abs(b).max())


def psnr_range2(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two images in [-1, 1] (peak-to-peak 2); inf when equal."""
    mse = float(((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(4.0 / mse)


def map_stats(x: torch.Tensor) -> np.ndarray:
    """``[mean, std, max|.|]`` of a whole map, as the vector files store them (std as torch's, ddof 1)."""
    a = x.detach().double().numpy()
    return np.array([a.mean(), a.std(ddof=1), np.abs(a).max()])


def value_stats(x: torch.Tensor) -> np.ndarray:
    """``[mean, std, min, max, max|.|]`` of a whole tensor, as the StyleGAN2/e4e vector files store them."""
    a = x.detach().double().numpy()
    return np.array([a.mean(), a.std(ddof=1), a.min(), a.max(), np.abs(a).max()])


def test_every_vector_file_is_checked() -> None:
    names = {p.stem for p in (INTEROP / "vectors").glob("*.npz")}
    assert names, f"no vector files in {INTEROP / 'vectors'}"
    unknown = names - CHECKED - PENDING
    assert not unknown, f"vector files with no test: {sorted(unknown)}"
    assert CHECKED <= names, f"vector files missing: {sorted(CHECKED - names)}"


# --------------------------------------------------------------------------------------------- networks


@pytest.mark.slow
def test_aei_net_matches_reference() -> None:
    """GHOST's AEI-Net (``G_unet_2blocks``) layout: every stored output within 1e-4 in float64.

    In float32 the attribute maps and the pre-tanh output stay within 1e-4 too, but the swapped face Y
    does not on every CPU: oneDNN sums convolutions in an order that depends on the instruction set (here,
    AVX2: the first convolution is bit-exact, the second already differs by ~1e-6), and eight AAD blocks
    with instance norms grow that to ~3e-5 of the pre-tanh range (max 14.7), which tanh maps onto a range
    of 1. The reference's own float32 Y is 7e-5 from the float64 result; ours on AVX2 2.6e-4. The float64
    run shows the network computes the reference's function; float32 is held to 1e-3 on Y.
    """
    ref, meta = interop_vectors("aei_net")
    net = AEINet().eval()
    net.load_state_dict(recipe_weights("ghost_aei_unet_2blocks.tsv", meta), strict=True)
    pre_tanh: list[torch.Tensor] = []
    net.generator.AADBlk8.register_forward_hook(lambda _m, _i, out: pre_tanh.append(out))
    for dtype in (torch.float32, torch.float64):
        net.to(dtype)
        pre_tanh.clear()
        with torch.no_grad():
            y, attrs = net(torch.from_numpy(ref["xt"]).to(dtype), torch.from_numpy(ref["z_id"]).to(dtype))
        errors = {"y": rel_error(y, ref["y"]), "y_pre_tanh": rel_error(pre_tanh[0], ref["y_pre_tanh"])}
        for k, attr in enumerate(attrs, start=1):
            step = int(meta["attr_stride"][f"attr{k}"])
            errors[f"attr{k}"] = rel_error(attr[:, :, ::step, ::step], ref[f"attr{k}"])
            errors[f"attr{k}_stats"] = rel_error(map_stats(attr), ref[f"attr{k}_stats"])
        y_tolerance = TOLERANCE if dtype == torch.float64 else AEI_FLOAT32_Y_TOLERANCE
        bad = {k: e for k, e in errors.items() if e > (y_tolerance if k == "y" else TOLERANCE)}
        assert not bad, f"{dtype}: {bad}"
    del net


@pytest.mark.parametrize(
    ("name", "factory"), [("arcface_iresnet100", iresnet100), ("arcface_iresnet50", iresnet50)]
)
def test_arcface_matches_reference(name: str, factory) -> None:
    ref, meta = interop_vectors(name)
    net = factory().eval()
    net.load_state_dict(recipe_weights(f"{name}.tsv", meta), strict=True)
    with torch.no_grad():
        emb = net(torch.from_numpy(ref["x"]))
    assert rel_error(emb, ref["emb"]) <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "table"),
    [("stylegan2_256", "stylegan2_256_g.tsv"), ("stylegan2_1024", "stylegan2_ffhq_1024_g_ema.tsv")],
)
def test_stylegan2_matches_reference(name: str, table: str) -> None:
    """rosinality's Generator (``g_ema`` layout): the mapping's w, and the image from z (mapped) and from a
    W+ latent with the stored noise; the 1024 file stores the image area-averaged to 256 and every 16th
    pixel, the 256 file the image itself."""
    import torch.nn.functional as F

    from models.stylegan2 import Generator

    ref, meta = interop_vectors(name)
    net = Generator(int(meta["size"])).eval()
    net.load_state_dict(recipe_weights(table, meta), strict=True)
    assert net.n_latent == meta["n_latent"] and net.num_layers == meta["num_layers"]
    errors = {}
    with torch.no_grad():
        errors["style"] = rel_error(net.mapping(torch.from_numpy(ref["z"])), ref["style"])
        images = {
            "img_z": net(torch.from_numpy(ref["z"]), input_is_latent=False),
            "img_wplus": net(torch.from_numpy(ref["wplus"])),
        }
    for key, img in images.items():
        if f"{key}_area256" in ref:
            errors[f"{key}_area256"] = rel_error(
                F.interpolate(img, (256, 256), mode="area"), ref[f"{key}_area256"]
            )
            errors[f"{key}_s16"] = rel_error(img[:, :, ::16, ::16], ref[f"{key}_s16"])
        else:
            errors[key] = rel_error(img, ref[key])
        errors[f"{key}_stats"] = rel_error(value_stats(img), ref[f"{key}_stats"])
    print(name, {k: f"{v:.1e}" for k, v in errors.items()})
    bad = {k: e for k, e in errors.items() if e > TOLERANCE}
    assert not bad, bad
    del net


@pytest.mark.slow
def test_e4e_encoder_matches_reference() -> None:
    """e4e's encoder (IR-SE50 and the map-to-style blocks): the W+ codes before ``latent_avg``."""
    from models.e4e import Encoder4Editing

    ref, meta = interop_vectors("e4e_encoder")
    net = Encoder4Editing().eval()
    net.load_state_dict(recipe_weights("e4e_ir_se50_encoder.tsv", meta), strict=True)
    x = REGISTRY["e4e_encoder"].normalisation.to_network(
        torch.from_numpy(ref["img"]).permute(0, 3, 1, 2).float()
    )
    with torch.no_grad():
        codes = net(x)
    assert rel_error(codes, ref["codes"]) <= TOLERANCE
    assert rel_error(value_stats(codes), ref["codes_stats"]) <= TOLERANCE
    del net


def test_maskfacegan_classifier_matches_reference() -> None:
    """MaskFaceGAN's BranchedTiny: the 40 attribute logits, in the reference's attribute order."""
    from models.attribute_classifier import ATTRIBUTES, BranchedTiny

    ref, meta = interop_vectors("maskfacegan_classifier")
    assert list(ATTRIBUTES) == meta["attributes"]
    net = BranchedTiny().eval()
    net.load_state_dict(recipe_weights("maskfacegan_branchedtiny.tsv", meta), strict=True)
    x01 = REGISTRY["maskfacegan_classifier"].normalisation.to_network(
        torch.from_numpy(ref["img"]).permute(0, 3, 1, 2).float()
    )
    with torch.no_grad():
        assert rel_error(net(x01), ref["logits"]) <= TOLERANCE


@pytest.mark.slow
def test_maskfacegan_parser_matches_reference() -> None:
    """MaskFaceGAN's DeepLabV3-ResNet50 parser: logits, their argmax and softmax, and the skin ("recon")
    mask MaskFaceGAN makes from them (bilinear to 1024)."""
    from models.deeplab_parser import MaskFaceGANParser, region_mask

    ref, meta = interop_vectors("maskfacegan_parser")
    net = MaskFaceGANParser().eval()
    net.load_state_dict(recipe_weights("maskfacegan_faceparser_deeplabv3_r50.tsv", meta), strict=True)
    x01 = torch.from_numpy(ref["img"]).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        logits = net(REGISTRY["maskfacegan_parser"].normalisation.to_network(x01 * 255.0))
        recon = region_mask(net.probabilities(x01), ("skin",))
    step = int(meta["logits_stride"])
    errors = {
        "logits": rel_error(logits[:, :, ::step, ::step], ref["logits_s4"]),
        "prob": rel_error(torch.softmax(logits, 1)[:, :, ::step, ::step], ref["prob_s4"]),
        "recon": rel_error(
            recon[:, :, :: int(meta["recon_mask_stride"]), :: int(meta["recon_mask_stride"])],
            ref["recon_mask_s8"],
        ),
    }
    assert not {k: e for k, e in errors.items() if e > TOLERANCE}, errors
    assert (logits.argmax(1).numpy() == ref["argmax"]).mean() > 0.9999
    del net


@pytest.mark.slow
def test_bisenet_matches_reference() -> None:
    ref, meta = interop_vectors("bisenet")
    net = bisenet19().eval()
    net.load_state_dict(recipe_weights("bisenet_faceparsing_19.tsv", meta), strict=True)
    # the registry's normalisation is what parse_faces feeds the network: the reference checks it too
    img = torch.from_numpy(ref["img"]).permute(0, 3, 1, 2).float()
    x = REGISTRY["face_parser_bisenet"].normalisation.to_network(img)
    with torch.no_grad():
        main, aux16, aux32 = net(x)
    s, t = int(meta["main_stride"]), int(meta["aux_stride"])
    errors = {
        "main_s4": rel_error(main[:, :, ::s, ::s], ref["main_s4"]),
        "aux16_s16": rel_error(aux16[:, :, ::t, ::t], ref["aux16_s16"]),
        "aux32_s16": rel_error(aux32[:, :, ::t, ::t], ref["aux32_s16"]),
        "main_stats": rel_error(map_stats(main), ref["main_stats"]),
    }
    assert max(errors.values()) <= TOLERANCE, errors
    agreement = float((main.argmax(1).numpy() == ref["argmax"]).mean())
    assert agreement >= 0.9999, agreement  # classes only differ where two logits tie within rounding


# --------------------------------------------------------------------------------------------- GHOST's crop


@pytest.fixture(scope="module")
def ghost_ref(data_dir: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The stored GHOST preprocessing of obama_a.jpg and the photo ``(H, W, 3) uint8`` RGB."""
    from pipeline.run import load_image

    ref, meta = interop_vectors("ghost_preprocess")
    assert meta["image"].endswith("obama_a.jpg")
    return ref, load_image(data_dir / "faces" / "obama_a.jpg")


def test_ghost_alignment_matches_reference(ghost_ref) -> None:
    ref, _ = ghost_ref
    m224, pose = ghost_alignment(ref["kps"])
    assert pose == int(ref["pose_index"])
    np.testing.assert_array_equal(GHOST_POSE_TEMPLATES[pose] * 2, ref["template224"])
    np.testing.assert_allclose(m224, ref["m224"], rtol=0, atol=1e-9)


def test_ghost_crops_match_reference(ghost_ref) -> None:
    """The align stage with configs/faceshifter.yaml gives GHOST's 224 crop, its 256 generator input and
    its 112 ArcFace input (equal here; the issue's bar is 0.25 px and 30 dB)."""
    ref, image = ghost_ref
    m224, _ = ghost_alignment(ref["kps"])
    crop224 = ghost_crops(image[None], [0], [m224], 224)[0]
    assert int(np.abs(crop224[:, :, ::-1].astype(int) - ref["crop224_bgr"]).max()) <= 1

    cfg = load_config(str(CONFIG_DIR / "faceshifter.yaml"), [])
    face = FaceRecord(box=np.zeros(4, np.float32), score=1.0, points5=ref["kps"].copy())
    zero = np.zeros(1, np.int64)
    AlignStage(cfg)(FrameBatch("obama_a", zero, zero, image[None], [[face]]))
    ghost256 = transform_points(ref["kps"], resize_affine(ref["m224"], 224, 256))
    assert np.abs(transform_points(ref["kps"], face.affine) - ghost256).max() <= KEYPOINT_TOLERANCE_PX
    g_input = to_signed(face.crop[None], "cpu", torch.float32).numpy()
    assert psnr_range2(g_input, ref["g_input"]) >= MIN_PSNR_DB
    assert np.abs(g_input - ref["g_input"]).max() <= 2 / 255  # at most one grey level anywhere

    arcface_in = ghost_identity_input(image, ref["kps"]).numpy()
    assert psnr_range2(arcface_in, ref["arcface_input"]) >= MIN_PSNR_DB
    assert np.abs(arcface_in - ref["arcface_input"]).max() <= 2 / 255


def test_ghost_alignment_picks_templates_as_insightface() -> None:
    """Against scikit-image's similarity (what insightface calls) on faces turned from one profile to the
    other: the same template and the same matrix."""
    from skimage.transform import SimilarityTransform

    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        pose = rng.integers(0, 5)
        angle, scale = rng.uniform(-0.5, 0.5), rng.uniform(0.5, 4.0)
        rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        pts = GHOST_POSE_TEMPLATES[pose] @ rot.T + rng.uniform(0, 900, 2) + rng.normal(0, 3, (5, 2))
        pts = pts.astype(np.float32)
        best, best_error = None, np.inf
        for i, template in enumerate(GHOST_POSE_TEMPLATES * 2):
            m = SimilarityTransform.from_estimate(pts, template).params[:2]
            error = np.sqrt(((np.c_[pts, np.ones(5)] @ m.T - template) ** 2).sum(1)).sum()
            if error < best_error:
                best, best_i, best_error = m, i, error
        m224, index = ghost_alignment(pts)
        assert index == best_i
        np.testing.assert_allclose(m224, best, rtol=1e-6, atol=1e-6)
        seen.add(index)
    assert seen == set(range(5))
