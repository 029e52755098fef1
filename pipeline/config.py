"""Configuration: YAML files under configs/ plus ``key.path=value`` overrides."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from models.errors import ConfigError

_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"


def _merge(base: dict, update: dict, where: str) -> dict:
    for key, value in update.items():
        if key not in base:
            raise ConfigError(f"unknown config key {where}{key}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {where}{key} is a section, not a value")
            _merge(base[key], value, f"{where}{key}.")
        else:
            base[key] = value
    return base


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=3"`` → (["a", "b"], 3); the value is parsed as YAML (numbers, booleans, lists)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key.path=value")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc.problem})") from None
    if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 4e-4 (no dot) as text; people mean the number
    return path, value


# The swap chain's stages in order (pipeline.run.build_specs); ray.actor_groups names them.
STAGE_NAMES = ("detect", "landmarks", "track", "smooth", "align", "swap", "mask", "blend")

# ---------------------------------------------------------------------------------------------- the schema
# Every key's type and range, in one place (defaults stay in configs/default.yaml). Strict: a bool is not a
# number, a number is not text, ints and floats mix where a float is asked for. A value out of range stops
# the run when the config is loaded, before any file is opened.

Unit = Annotated[float, Field(ge=0, le=1)]  # a share or probability in [0, 1]
Decay = Annotated[float, Field(ge=0, lt=1)]  # an exponential filter's a in s = a*s_prev + (1-a)*s_now
Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Count = Annotated[int, Field(ge=1)]
Index = Annotated[int, Field(ge=0)]


def _sha256(v: str) -> str:
    if v and not re.fullmatch(r"[0-9a-fA-F]{64}", v):
        raise ValueError("should be the file's sha256 (64 hex digits), or empty for no check")
    return v


Sha256 = Annotated[str, AfterValidator(_sha256)]  # "" = not pinned
SOURCE_FACE_CHOICES = ("largest", "left", "right")


def _ordered_pair(v: list[float]) -> list[float]:
    if v[0] > v[1]:
        raise ValueError("should be [low, high] with low <= high")
    return v


Range = Annotated[list[NonNegative], Field(min_length=2, max_length=2), AfterValidator(_ordered_pair)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Runtime(_Section):
    device: Literal["cpu", "cuda", "auto"]
    torch_threads: Count


class _Detect(_Section):
    model: Literal["mtcnn"]
    min_face_size: Annotated[float, Field(ge=12)]  # MTCNN's P-Net window: nothing smaller is found
    thresholds: Annotated[list[Unit], Field(min_length=3, max_length=3)]
    scale_factor: Annotated[float, Field(gt=0, lt=1)]
    max_side: Annotated[int, Field(ge=64)]
    min_score: Unit
    every: Count


class _Landmarks(_Section):
    model: Literal["dlib", "fan"]


class _Track(_Section):
    iou_threshold: Unit


class _Smooth(_Section):
    enabled: bool
    window: Count
    sigma: Positive
    flow_weight: NonNegative
    flow: Literal["lk", "dis"]
    curvature_weight: NonNegative
    max_gap: Index


class _Scene(_Section):
    threshold: Positive


class _Align(_Section):
    crop_size: Annotated[int, Field(ge=16, le=4096)]
    min_crop_size: Annotated[int, Field(ge=16, le=4096)]
    crop_step: Annotated[int, Field(ge=1, le=4096)]
    template: Literal["arcface", "ghost", "ffhq"]
    face_scale: Annotated[float, Field(gt=0, le=2)]
    centre_y: Unit


class _Swap(_Section):
    backend: Literal["classic", "faceshifter", "wsc", "latent", "rsgan"]
    target: Literal["all", "largest"]
    source_face: Any

    @field_validator("source_face", mode="plain")
    @classmethod
    def _face(cls, v: Any) -> Any:
        if (isinstance(v, int) and not isinstance(v, bool) and v >= 0) or v in SOURCE_FACE_CHOICES:
            return v
        choices = ", ".join(SOURCE_FACE_CHOICES)
        raise ValueError(f"should be one of {choices} or a face index 0, 1, ... counted from the left")


class _Classic(_Section):
    keep_inner_mouth: bool
    color_transfer: Literal["lab", "none"]
    color_smoothing: Decay
    shape_transfer: Unit
    shape_smoothing: Decay
    shading_sigma: Annotated[float, Field(ge=0, le=1)]
    match_detail: bool
    source_hair: Literal["drop", "keep"]
    even_source_light: Unit
    source_glasses: Literal["drop", "keep"]
    mirror_turned_source: Range
    turn_fade: Range


class _FaceShifter(_Section):
    arcface: Literal["arcface_iresnet100", "arcface_iresnet50"]
    hear: Literal["auto", "always", "never"]
    batch_size: Count
    half: bool


class _Wsc(_Section):
    size: Annotated[int, Field(ge=32)]
    base: Count
    max_width: Count
    code_size: Annotated[int, Field(ge=1)]
    code_channels: Count
    arcface: Literal["arcface_iresnet100", "arcface_iresnet50"]
    regions: Literal["landmarks", "parsing"]
    batch_size: Count
    half: bool


class _EditWeights(_Section):
    classifier: NonNegative
    mse: NonNegative
    lpips: NonNegative
    seg: NonNegative
    noise: NonNegative


class _StyleGAN2Layout(_Section):
    size: Annotated[int, Field(ge=8)]
    style_dim: Count
    n_mlp: Count
    channel_multiplier: Count
    max_channels: Count


class _E4eLayout(_Section):
    stages: Annotated[
        list[Annotated[list[Count], Field(min_length=2, max_length=2)]], Field(min_length=4, max_length=4)
    ]
    n_styles: Annotated[int, Field(ge=8)]
    input_size: Annotated[int, Field(ge=16)]


class _LatentLayout(_E4eLayout):  # e4e's trunk and style heads, plus the mask head and the gates
    mask_width: Count
    gate_hidden: Count


class _ParserLayout(_Section):
    width: Count
    aspp_width: Count
    input_size: Annotated[int, Field(ge=16)]


class _ClassifierLayout(_Section):
    width: Count


class _Latent(_Section):
    layout: _LatentLayout
    arcface: Literal["arcface_iresnet100", "arcface_iresnet50"]
    code_smoothing: Decay
    batch_size: Count
    half: bool


class _RSGANLayout(_Section):
    size: Annotated[int, Field(ge=16)]
    base: Count
    z_dim: Count
    n_attr: Index


class _RSGAN(_Section):
    layout: _RSGANLayout
    regions: Literal["landmarks", "parsing"]
    code_smoothing: Decay
    batch_size: Count
    half: bool


class _Edit(_Section):
    steps_latent: Index
    steps_noise: Index
    lr_latent: Positive
    lr_noise: Positive
    classifier_from: Index
    dynamic_steps: Index
    e4e_start: Index
    reinit: bool
    smoothing: Annotated[float, Field(ge=0, lt=0.5)]
    mask_floor: Unit
    code_smoothing: Decay
    mean_samples: Count
    seed: Index
    weights: _EditWeights
    e4e: _E4eLayout
    parser: _ParserLayout
    classifier: _ClassifierLayout


class _Sha256(_Section):
    arcface_iresnet100: Sha256
    arcface_iresnet50: Sha256
    aei_net: Sha256
    hear_net: Sha256
    face_parser_bisenet: Sha256
    hopenet: Sha256
    face_recon: Sha256
    wsc_generator: Sha256
    latent_swap: Sha256
    rsgan: Sha256
    rsgan_discriminator: Sha256
    stylegan2_ffhq: Sha256
    e4e_encoder: Sha256
    maskfacegan_parser: Sha256
    maskfacegan_classifier: Sha256
    vgg16_imagenet: Sha256


class _Weights(_Section):
    dir: Annotated[str, Field(min_length=1)]
    sha256: _Sha256


class _Mask(_Section):
    types: Annotated[list[Literal["box", "landmarks", "occlusion", "region"]], Field(min_length=1)]
    box_blur: Unit
    occlusion_threshold: Positive
    occlusion_grow: Unit
    region_classes: Annotated[list[str], Field(min_length=1)]
    target_glasses: Literal["keep", "paste"]
    release: Decay

    @field_validator("region_classes")
    @classmethod
    def _classes(cls, v: list[str]) -> list[str]:
        from models.bisenet import FACE_PARSING_CLASSES

        unknown = [c for c in v if c not in FACE_PARSING_CLASSES]
        if unknown:
            known = ", ".join(FACE_PARSING_CLASSES)
            raise ValueError(f"{unknown[0]!r} is not a face-parsing class ({known})")
        return v


class _Blend(_Section):
    erode: Annotated[float, Field(ge=0, lt=0.5)]
    feather: Annotated[float, Field(ge=0, lt=0.5)]


class _Evaluate(_Section):
    identity: Literal["dlib", "arcface_iresnet100", "arcface_iresnet50"]
    pose: Literal["pnp", "hopenet"]
    expression: Literal["landmarks", "face_recon"]


class _Encode(_Section):
    codec: Annotated[str, Field(min_length=1)]  # the encoder itself is opened before a run (check_encoder)
    preset: Annotated[str, Field(min_length=1)]
    crf: Annotated[float, Field(ge=0, le=63)]
    pix_fmt: Annotated[str, Field(min_length=1)]
    deterministic: bool
    watermark: bool


class _Segments(_Section):
    seconds: NonNegative
    parts: Index


class _Ray(_Section):
    max_in_flight: Count
    actor_groups: list[list[str]]
    swap_num_gpus: NonNegative
    swap_actors: Count
    stage_actors: Count
    concurrent_videos: Count
    max_restarts: Index
    video_retries: Index
    gcs_reconnect_seconds: Positive

    @field_validator("actor_groups")
    @classmethod
    def _groups(cls, v: list[list[str]]) -> list[list[str]]:
        names = [n for g in v for n in g]
        if any(n not in STAGE_NAMES for n in names) or len(set(names)) != len(names):
            stages = ", ".join(STAGE_NAMES)
            raise ValueError(f"should be lists of stage names, each at most once, of {stages}")
        return v


class _Train(_Section):
    tiny: bool
    size: Annotated[int, Field(ge=8)]
    aei_base: Count
    aei_num_blocks: Count
    hear_base: Count
    disc_ndf: Count
    disc_layers: Count
    disc_scales: Count
    aei_checkpoint: str
    steps: Count
    batch_size: Count
    lr: Positive
    beta1: Decay
    beta2: Decay
    same_identity_share: Unit
    lambda_att: NonNegative
    lambda_id: NonNegative
    lambda_rec: NonNegative
    hear_lambda_chg: NonNegative
    hear_lambda_rec: NonNegative
    wsc_lambda_id: NonNegative
    wsc_lambda_rec: NonNegative
    wsc_lambda_outside: NonNegative
    wsc_lambda_3dmm: NonNegative
    wsc_lambda_removal: NonNegative
    latent_lambda_id: NonNegative
    latent_lambda_l2: NonNegative
    latent_lambda_lpips: NonNegative
    latent_lambda_3dmm: NonNegative
    latent_lambda_mask: NonNegative
    rsgan_lambda_kl: NonNegative
    rsgan_lambda_region: NonNegative
    rsgan_lambda_rec: NonNegative
    rsgan_lambda_adv: NonNegative
    rsgan_lambda_cls: NonNegative
    rsgan_attributes: str
    checkpoint_every: Count
    sample_every: Count
    log_every: Count
    seed: Index
    workers: Count


class _Ffpp(_Section):
    method: str
    splits_dir: str
    frames_per_video: Count
    source_frames: Count
    source_stride: Count
    frontal_yaw: Annotated[float, Field(gt=0, le=90)]
    source_margin: NonNegative
    upsample: Annotated[int, Field(ge=0, le=3)]
    flicker_every: Count
    contact_sheet_videos: Index


class ConfigSchema(_Section):
    """The whole config: each section's keys, types and ranges (see configs/default.yaml for meanings)."""

    executor: Literal["auto", "ray", "local"]
    batch_size: Count
    runtime: _Runtime
    detect: _Detect
    landmarks: _Landmarks
    track: _Track
    smooth: _Smooth
    scene: _Scene
    align: _Align
    swap: _Swap
    classic: _Classic
    faceshifter: _FaceShifter
    wsc: _Wsc
    stylegan2: _StyleGAN2Layout
    latent: _Latent
    rsgan: _RSGAN
    edit: _Edit
    weights: _Weights
    mask: _Mask
    blend: _Blend
    evaluate: _Evaluate
    encode: _Encode
    segments: _Segments
    ray: _Ray
    train: _Train
    ffpp: _Ffpp


def validate(cfg: dict) -> None:
    """Check ``cfg`` against :class:`ConfigSchema`; the first problem as a one-line ConfigError."""
    try:
        ConfigSchema.model_validate(cfg)
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0], cfg)) from None


def _describe(error: dict, cfg: dict) -> str:
    """``key.path=value: what it should be`` for one pydantic error."""
    keys, node, item = [], cfg, None
    for part in error["loc"]:
        if isinstance(node, dict) and part in node:
            keys.append(str(part))
            node = node[part]
        elif isinstance(part, int) and isinstance(node, list):
            item = part
            break
        else:
            break
    message = str(error["msg"])
    for prefix in ("Value error, ", "Input "):
        message = message.removeprefix(prefix)
    key = ".".join(keys)
    if item is not None:
        return f"{key}={node!r}: item {item} {message}"
    return f"{key}={node!r}: {message}"


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Defaults, then the given YAML file (if any), then overrides; unknown keys are errors."""
    with open(DEFAULT_CONFIG) as f:
        defaults = yaml.safe_load(f)
    cfg = copy.deepcopy(defaults)
    if path is not None and Path(path).resolve() != DEFAULT_CONFIG:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            with open(p) as f:
                extra = yaml.safe_load(f) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise ConfigError(f"{p}: not valid YAML: {problem}{where}") from None
        if not isinstance(extra, dict):
            raise ConfigError(f"{p}: a config file must be a mapping of keys")
        _merge(cfg, extra, "")
    _apply(cfg, overrides)
    validate(cfg)
    return cfg


def _apply(cfg: dict, overrides: list[str] | tuple[str, ...]) -> None:
    """Set each ``key.path=value`` override in ``cfg`` (in place); unknown keys are ConfigError."""
    for text in overrides:
        keys, value = parse_override(text)
        node: dict = cfg
        for i, k in enumerate(keys[:-1]):
            if not isinstance(node.get(k), dict):
                raise ConfigError(f"unknown config section {'.'.join(keys[: i + 1])} in override {text!r}")
            node = node[k]
        if keys[-1] not in node:
            raise ConfigError(f"unknown config key {'.'.join(keys)} in override {text!r}")
        if isinstance(node[keys[-1]], dict):
            raise ConfigError(f"config key {'.'.join(keys)} is a section, not a value")
        node[keys[-1]] = value


def with_overrides(cfg: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """A checked copy of a loaded ``cfg`` with more ``key.path=value`` overrides (e.g. one job's of many).

    Each value must fit :class:`ConfigSchema` (type and range).
    """
    out = copy.deepcopy(cfg)
    _apply(out, overrides)
    validate(out)
    return out
