"""Configuration: YAML files under configs/ plus ``key.path=value`` overrides."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from stages.errors import ConfigError

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

# Settings that take one of a fixed set of values; checked when the config is loaded, before any work.
CHOICES: dict[str, tuple[str, ...]] = {
    "executor": ("ray", "local"),
    "runtime.device": ("cpu", "cuda", "auto"),
    "detect.model": ("mtcnn",),
    "landmarks.model": ("dlib", "fan"),
    "smooth.flow": ("lk", "dis"),
    "align.template": ("arcface", "ghost"),
    "swap.backend": ("classic", "faceshifter"),
    "swap.target": ("all", "largest"),
    "classic.color_transfer": ("lab", "none"),
    "classic.source_hair": ("drop", "keep"),
    "mask.target_glasses": ("keep", "paste"),
    "classic.source_glasses": ("drop", "keep"),
    "faceshifter.arcface": ("arcface_iresnet100", "arcface_iresnet50"),
    "faceshifter.hear": ("auto", "always", "never"),
    "evaluate.identity": ("dlib", "arcface_iresnet100", "arcface_iresnet50"),
    "evaluate.pose": ("pnp", "hopenet"),
    "evaluate.expression": ("landmarks", "face_recon"),
    "mask.types": ("box", "landmarks", "occlusion", "region"),  # a list of these
}


def _check(cfg: dict, defaults: dict, where: str = "") -> None:
    """Each value has its default's type (ints and floats mix) and, where listed, one of CHOICES."""
    for key, default in defaults.items():
        name, value = f"{where}{key}", cfg[key]
        if isinstance(default, dict):
            _check(value, default, f"{name}.")
            continue
        if name in CHOICES and isinstance(default, list):
            if not isinstance(value, list) or not value or any(v not in CHOICES[name] for v in value):
                raise ConfigError(
                    f"{name}={value!r} should be a list of one or more of: {', '.join(CHOICES[name])}"
                )
        elif name in CHOICES and value not in CHOICES[name]:
            raise ConfigError(f"{name}={value!r} is not one of: {', '.join(CHOICES[name])}")
        if name == "ray.actor_groups":
            _check_actor_groups(value)
        number = (int, float)
        if isinstance(default, bool) or default is None:
            ok = default is None or isinstance(value, bool)
        elif isinstance(default, number):
            ok = isinstance(value, number) and not isinstance(value, bool)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise ConfigError(f"{name}={value!r} should be a {type(default).__name__} like {default!r}")


def _check_actor_groups(groups: Any) -> None:
    """``ray.actor_groups``: lists of stage names, each name at most once."""
    names = [n for g in groups for n in g] if isinstance(groups, list) and all(
        isinstance(g, list) for g in groups) else None
    if names is None or any(n not in STAGE_NAMES for n in names) or len(set(names)) != len(names):
        raise ConfigError(
            f"ray.actor_groups={groups!r} should be lists of stage names, each at most once, from: "
            + ", ".join(STAGE_NAMES)
        )


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
            raise ConfigError(f"{p}: not valid YAML ({exc})") from None
        if not isinstance(extra, dict):
            raise ConfigError(f"{p}: a config file must be a mapping of keys")
        _merge(cfg, extra, "")
    _apply(cfg, overrides)
    _check(cfg, defaults)
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

    Each value must have the type of the one it replaces and, where listed, be one of ``CHOICES``.
    """
    out = copy.deepcopy(cfg)
    _apply(out, overrides)
    _check(out, cfg)
    return out
