"""Pluggable evaluator networks: Hopenet and Deep3DFaceRecon layouts, their input crops, and the adapters
the evaluator uses (random weights injected through the loader: no checkpoint files are needed)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from models.checkpoints import add_missing_batch_counters, check_state_dict, load_state_dict_file
from models.errors import ConfigError, ModelFileError
from models.face_recon import (
    LM3D_5,
    FaceReconNet,
    align_face,
    face_recon_resnet50,
    five_points_from_68,
    split_coefficients,
)
from models.hopenet import (
    Hopenet,
    angles_from_logits,
    detection_crop_box,
    hopenet,
    landmark_crop_box,
    preprocess,
)
from pipeline.evaluation.networks import (
    ARCFACE_SAME_PERSON_BELOW,
    ExpressionNet,
    IdentityNet,
    PoseNet,
    build_evaluator_networks,
)
from tests.conftest import FACES

# Facts established from the public code (see the module docs of models/hopenet.py and models/face_recon.py).
HOPENET_KEYS = 326  # torchvision ResNet-50 trunk (318) + fc_yaw, fc_pitch, fc_roll, fc_finetune
HOPENET_PARAMS = 23_919_890
FACE_RECON_KEYS = 332  # backbone.* (318) + final_layers.{0..6}.{weight,bias}
FACE_RECON_PARAMS = 24_034_625


def _load(name: str) -> np.ndarray:
    return np.asarray(Image.open(FACES / name).convert("RGB"))


@pytest.fixture(scope="module")
def faces():
    """Two real photos with their largest dlib face: [(image, box, landmarks68)]."""
    from pipeline.evaluation.faces import detect_faces

    out = []
    for name in ("obama_a.jpg", "biden_a.jpg"):
        image = _load(name)
        found = detect_faces(image)
        assert found, f"dlib finds no face in {name}"
        out.append((image, found[0].box, found[0].landmarks))
    return out


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    from models.arcface import iresnet50

    return {
        "arcface_iresnet50": iresnet50().eval(),
        "hopenet": hopenet().eval(),
        "face_recon": face_recon_resnet50().eval(),
    }


# ----------------------------------------------------------------------------------------- Hopenet


def test_hopenet_state_dict_layout_and_forward(nets):
    net = nets["hopenet"]
    sd = net.state_dict()
    keys = list(sd)
    assert len(keys) == HOPENET_KEYS
    assert sum(p.numel() for p in net.parameters()) == HOPENET_PARAMS
    assert keys[:6] == [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "bn1.num_batches_tracked",
    ]
    assert keys[-8:] == [
        f"fc_{h}.{p}" for h in ("yaw", "pitch", "roll", "finetune") for p in ("weight", "bias")
    ]
    shapes = {
        "conv1.weight": (64, 3, 7, 7),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer4.2.conv3.weight": (2048, 512, 1, 1),
        "fc_yaw.weight": (66, 2048),
        "fc_finetune.weight": (3, 2051),
    }
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    assert "layer3.5.bn3.running_var" in sd and "layer3.6.conv1.weight" not in sd  # [3, 4, 6, 3]
    assert isinstance(net.avgpool, torch.nn.AvgPool2d) and net.avgpool.kernel_size == 7
    with torch.inference_mode():
        yaw, pitch, roll = net(torch.randn(2, 3, 224, 224))
    assert yaw.shape == pitch.shape == roll.shape == (2, 66)
    with pytest.raises(ValueError, match="224"):
        net(torch.zeros(1, 3, 256, 256))


def test_hopenet_plain_state_dict_round_trip(tmp_path, nets):
    net = nets["hopenet"]
    path = tmp_path / "hopenet_robust_alpha1.pkl"
    torch.save(net.state_dict(), path)
    torch.manual_seed(123)
    other = load_state_dict_file(Hopenet(), path).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        for a, b in zip(net(x), other(x)):
            assert torch.equal(a, b)
    # A file from PyTorch < 0.4.1 has no BatchNorm counters: the strict pre-check names the first one,
    # add_missing_batch_counters restores them.
    legacy = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(legacy) == HOPENET_KEYS - 53  # 53 BatchNorms in a ResNet-50
    with pytest.raises(ValueError, match="bn1.num_batches_tracked"):
        check_state_dict(other, legacy, "legacy.pkl")
    upgraded = add_missing_batch_counters(legacy, other)
    check_state_dict(other, upgraded, "legacy.pkl")
    other.load_state_dict(upgraded, strict=True)


def test_angles_from_logits_reads_bins():
    logits = torch.full((3, 66), -1e4)
    for row, b in enumerate((33, 0, 65)):
        logits[row, b] = 1e4
    deg = angles_from_logits(logits, logits, logits)
    assert deg.shape == (3, 3) and deg.dtype == torch.float32
    assert torch.allclose(deg[:, 0], torch.tensor([0.0, -99.0, 96.0]))
    assert torch.equal(deg[:, 0], deg[:, 1]) and torch.equal(deg[:, 0], deg[:, 2])
    uniform = angles_from_logits(*(torch.zeros(1, 66),) * 3)
    assert torch.allclose(uniform, torch.full((1, 3), 32.5 * 3 - 99))


def test_hopenet_crops(faces):
    image, box, lm = faces[0]
    x1, y1, x2, y2 = landmark_crop_box(lm)
    lx1, ly1 = lm.min(0)
    lx2, ly2 = lm.max(0)
    w, h = lx2 - lx1, ly2 - ly1
    assert x1 == int(lx1 - 0.4 * w) and y1 == int(ly1 - 0.4 * h)
    assert x2 == int(lx2 + 0.4 * (lx2 - (lx1 - 0.4 * w)))  # widened again from the moved x_min
    assert y1 < ly1 and y2 > ly2 and x1 < lx1 and x2 > lx2
    d = detection_crop_box(box, image.shape[1], image.shape[0])
    assert d[0] >= 0 and d[1] >= 0 and d[2] <= image.shape[1] and d[3] <= image.shape[0]
    x = preprocess(image, (x1, y1, x2, y2))
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    assert -2.2 < float(x.min()) and float(x.max()) < 2.7  # ImageNet-normalised
    assert preprocess(image, (10, 10, 10, 50)) is None


# ----------------------------------------------------------------------------------------- FaceRecon


def test_face_recon_state_dict_layout_and_forward(nets):
    net = nets["face_recon"]
    sd = net.state_dict()
    keys = list(sd)
    assert len(keys) == FACE_RECON_KEYS
    assert sum(p.numel() for p in net.parameters()) == FACE_RECON_PARAMS
    assert keys[0] == "backbone.conv1.weight" and keys[317] == "backbone.layer4.2.bn3.num_batches_tracked"
    assert keys[318:] == [f"final_layers.{i}.{p}" for i in range(7) for p in ("weight", "bias")]
    widths = [sd[f"final_layers.{i}.weight"].shape for i in range(7)]
    assert widths == [(n, 2048, 1, 1) for n in (80, 64, 80, 3, 27, 2, 1)]
    assert not any(k.startswith("backbone.fc") for k in keys)
    with torch.inference_mode():
        out = net(torch.rand(2, 3, 224, 224))
    assert out.shape == (2, 257)
    parts = split_coefficients(out)
    sizes = {k: v.shape[1] for k, v in parts.items()}
    assert sizes == {"id": 80, "exp": 64, "tex": 80, "angle": 3, "gamma": 27, "trans": 3}
    assert torch.equal(torch.cat(list(parts.values()), dim=1), out)
    with pytest.raises(ValueError):
        split_coefficients(out[:, :256])


def test_face_recon_net_recon_checkpoint_round_trip(tmp_path, nets):
    net = nets["face_recon"]
    path = tmp_path / "epoch_20.pth"
    # The layout BaseModel.save_networks writes: the network under 'net_recon', plus optimiser state.
    optimiser = {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": [0, 1]}]}
    torch.save({"net_recon": net.state_dict(), "opt_00": optimiser}, path)
    with pytest.raises(ValueError, match="wrapper"):
        load_state_dict_file(FaceReconNet(), path)  # a wrapper dict is refused as a plain state dict
    obj = torch.load(path, map_location="cpu", weights_only=True)
    other = FaceReconNet()
    check_state_dict(other, obj["net_recon"], str(path))
    other.load_state_dict(obj["net_recon"], strict=True)
    other.eval()
    x = torch.rand(1, 3, 224, 224)
    with torch.inference_mode():
        assert torch.equal(net(x), other(x))


def test_align_face_places_the_template(faces):
    for image, _, lm in faces:
        p5 = five_points_from_68(lm)
        crop, (w0, h0, scale, tx, ty) = align_face(image, p5)
        assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
        assert (w0, h0) == (image.shape[1], image.shape[0]) and scale > 0
        # Where the five points land in the crop, vs the 3D template seen frontally at 102 px per unit.
        w, h = int(w0 * scale), int(h0 * scale)
        left = int(w / 2 - 112 + (tx - w0 / 2) * scale)
        top = int(h / 2 - 112 + (h0 / 2 - ty) * scale)
        landed = np.stack([p5[:, 0] * w / w0 - left, p5[:, 1] * h / h0 - top], axis=1)
        template = np.stack([112 + 102 * LM3D_5[:, 0], 112 - 102 * LM3D_5[:, 1]], axis=1)
        assert np.abs(landed - template).max() < 16
        assert crop.mean() > 40  # the face, not the black outside


# ----------------------------------------------------------------------------------------- adapters


def _loader(nets, calls=None):
    def load(name, cfg, device="cpu"):
        if calls is not None:
            calls.append((name, device))
        return nets[name]

    return load


def _cfg(base_cfg, **choices):
    cfg = copy.deepcopy(base_cfg)
    cfg["evaluate"] = {"identity": "dlib", "pose": "pnp", "expression": "landmarks", **choices}
    return cfg


def test_defaults_load_nothing(base_cfg):
    calls = []
    assert build_evaluator_networks(_cfg(base_cfg), loader=_loader({}, calls)) == {
        "identity": None,
        "pose": None,
        "expression": None,
    }
    assert build_evaluator_networks(copy.deepcopy(base_cfg), loader=_loader({}, calls))["pose"] is None
    assert calls == []
    with pytest.raises(ConfigError, match="evaluate.pose"):
        build_evaluator_networks(_cfg(base_cfg, pose="fsanet"), loader=_loader({}, calls))


def test_learned_adapters(base_cfg, nets, faces):
    calls = []
    cfg = _cfg(base_cfg, identity="arcface_iresnet50", pose="hopenet", expression="face_recon")
    built = build_evaluator_networks(cfg, loader=_loader(nets, calls))
    assert calls == [("arcface_iresnet50", "cpu"), ("hopenet", "cpu"), ("face_recon", "cpu")]
    ident, pose, expr = built["identity"], built["pose"], built["expression"]
    assert isinstance(ident, IdentityNet) and isinstance(pose, PoseNet) and isinstance(expr, ExpressionNet)
    assert ident.name == "arcface_iresnet50" and ident.same_person_below == ARCFACE_SAME_PERSON_BELOW
    (img_a, box_a, lm_a), (img_b, _, lm_b) = faces

    e1 = ident.embed_landmarks(img_a, lm_a)
    e2 = ident.embed_landmarks(img_a, lm_a)
    eb = ident.embed_landmarks(img_b, lm_b)
    assert e1.shape == (512,) and e1.dtype == np.float32
    assert abs(float(np.linalg.norm(e1)) - 1.0) < 1e-5
    assert np.array_equal(e1, e2) and ident.distance(e1, e2) < 1e-6
    assert 0 < ident.distance(e1, eb) <= 2
    points = np.array([[30, 50], [80, 50], [55, 70], [35, 90], [75, 90]], dtype=np.float32)
    assert ident.align(img_a, points).shape == (112, 112, 3)

    angles = pose.angles(img_a, box_a, lm_a)
    assert angles is not None and len(angles) == 3 and all(isinstance(v, float) for v in angles)
    assert all(-99.0 <= v <= 96.0 for v in angles)
    assert pose.angles(img_a, box_a, lm_a) == angles
    assert PoseNet(nets["hopenet"], crop="box").angles(img_a, box_a, lm_a) is not None
    assert pose.angles(img_a, box_a, np.full((68, 2), 100.0)) is None  # degenerate crop

    c1, c2, cb = expr.code(img_a, lm_a), expr.code(img_a, lm_a), expr.code(img_b, lm_b)
    assert c1.shape == (64,) and c1.dtype == np.float32
    assert np.array_equal(c1, c2) and expr.error(c1, c2) == 0.0
    assert expr.error(c1, cb) > 0
    assert np.array_equal(expr.coefficients(img_a, lm_a)["exp"], c1)


def test_face_scorer_uses_the_chosen_networks(nets, faces):
    """FaceScorer: dlib descriptors with Euclidean distance by default, the network's embedding with cosine
    distance when given; its signature names the networks and their weights."""
    from pipeline.evaluation.faces import DlibFace, detect_faces
    from pipeline.evaluation.scorer import FaceScorer

    (img_a, _, _), (img_b, _, _) = faces
    face_a, face_b = detect_faces(img_a)[0], detect_faces(img_b)[0]
    assert isinstance(face_a, DlibFace)
    default = FaceScorer()
    d = default.embedding(img_a, face_a)
    assert d.shape == (128,) and default.distance(d, d) == 0.0
    assert default.distance(d, default.embedding(img_b, face_b)) > 0.6  # two people
    assert default.expression_key == "expression_error_iod"
    assert default.expression_error(img_a, face_a, img_a, face_a) < 1e-12

    learned = FaceScorer(
        IdentityNet(nets["arcface_iresnet50"], "arcface_iresnet50"), PoseNet(nets["hopenet"])
    )
    e = learned.embedding(img_a, face_a)
    assert e.shape == (512,) and learned.distance(e, -e) == pytest.approx(2.0, abs=1e-5)
    assert learned.pose_angles(img_a, face_a, *img_a.shape[1::-1]) == PoseNet(nets["hopenet"]).angles(
        img_a, face_a.box, face_a.landmarks
    )
    assert "arcface_iresnet50" in learned.descriptions()["identity"]
    assert learned.signature() == learned.signature() != default.signature()
    other = copy.deepcopy(nets["arcface_iresnet50"])
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    assert FaceScorer(IdentityNet(other, "arcface_iresnet50"), PoseNet(nets["hopenet"])).signature() != (
        learned.signature()
    )


def test_missing_weights_raise_model_file_error(base_cfg, tmp_path):
    def missing(name, cfg, device="cpu"):
        raise ModelFileError(f"{tmp_path}/{name}.pth: {name} weights missing")

    for choice in ({"identity": "arcface_iresnet100"}, {"pose": "hopenet"}, {"expression": "face_recon"}):
        with pytest.raises(ModelFileError):
            build_evaluator_networks(_cfg(base_cfg, **choice), loader=missing)
    # The real registry loader on an empty folder: no fallback, one line naming the file.
    cfg = _cfg(base_cfg, identity="arcface_iresnet100")
    cfg["faceshifter"]["weights_dir"] = str(tmp_path)
    cfg["weights"] = {"dir": str(tmp_path), "sha256": {}}
    with pytest.raises(ModelFileError) as err:
        build_evaluator_networks(cfg)
    assert "backbone.pth" in str(err.value) and len(str(err.value).splitlines()) == 1
    for choice in ({"pose": "hopenet"}, {"expression": "face_recon"}):
        cfg = _cfg(base_cfg, **choice)
        cfg["faceshifter"]["weights_dir"] = str(tmp_path)
        cfg["weights"] = {"dir": str(tmp_path), "sha256": {}}
        with pytest.raises(ModelFileError):
            build_evaluator_networks(cfg)


# ----------------------------------------------------------------------------------------- registry


def test_hand_kept_evaluator_names_agree_with_the_registry(base_cfg):
    """EVALUATOR_NETWORKS is the one list of evaluator networks; every list of their names kept by hand
    elsewhere is the same: the config schema's choices (the default first), configs/default.yaml's defaults
    and the choices its comments list, the README's ``evaluate.<role>=<name>`` options, the FF++ report's
    expression unit. Each learned network loads a file of the weight registry and builds an adapter."""
    import re
    import typing

    from models.weights import REGISTRY
    from pipeline.config import DEFAULT_CONFIG, ConfigSchema
    from pipeline.evaluation.ffpp_report import expression_column
    from pipeline.evaluation.networks import EVALUATOR_NETWORKS, ROLES, choices_for
    from pipeline.evaluation.scorer import FaceScorer
    from tests.conftest import REPO

    assert {net.role for net in EVALUATOR_NETWORKS.values()} == set(ROLES)
    schema = ConfigSchema.model_fields["evaluate"].annotation.model_fields
    yaml_lines = DEFAULT_CONFIG.read_text().split("\nevaluate:", 1)[1].splitlines()
    for role in ROLES:
        names = choices_for(role)
        assert typing.get_args(schema[role].annotation) == names, f"pipeline/config.py evaluate.{role}"
        assert base_cfg["evaluate"][role] == names[0], f"{DEFAULT_CONFIG}: evaluate.{role} default"
        line = next(x for x in yaml_lines if x.strip().startswith(f"{role}:"))
        listed = tuple(part.split()[0] for part in line.split("#", 1)[1].split("|"))
        assert listed == names, f"{DEFAULT_CONFIG}: the comment of evaluate.{role}"
    readme = re.findall(r"evaluate\.(\w+)=(\w+)", (REPO / "README.md").read_text())
    assert readme and all(EVALUATOR_NETWORKS[name].role == role for role, name in readme)
    for name, net in EVALUATOR_NETWORKS.items():
        learned = net.weights is not None
        assert (net.build is not None) == learned, name
        assert not learned or net.weights in REGISTRY, name
    for name in choices_for("expression"):
        scorer = FaceScorer(expression=EVALUATOR_NETWORKS[name].build)
        assert expression_column({"evaluate": {"expression": name}})[0] == scorer.expression_key, name
