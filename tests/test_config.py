"""Config loading, overrides and the schema's types and ranges; and the lists kept by hand in several
places, which must agree (mask types, stage names, the weight registry, the evaluator's networks)."""

from __future__ import annotations

import typing

import pytest

from pipeline.config import DEFAULT_CONFIG, STAGE_NAMES, ConfigError, ConfigSchema, load_config


def test_config_overrides_and_errors(tmp_path):
    cfg = load_config(None, ["executor=local", "encode.crf=23", "detect.thresholds=[0.5, 0.6, 0.7]"])
    assert cfg["executor"] == "local" and cfg["encode"]["crf"] == 23
    assert cfg["detect"]["thresholds"] == [0.5, 0.6, 0.7]
    with pytest.raises(ConfigError, match="encode.crff"):
        load_config(None, ["encode.crff=1"])
    with pytest.raises(ConfigError, match="section"):
        load_config(None, ["encode=1"])
    extra = tmp_path / "x.yaml"
    extra.write_text("swap:\n  target: largest\n")
    assert load_config(extra)["swap"]["target"] == "largest"
    extra.write_text("swap:\n  colour: red\n")
    with pytest.raises(ConfigError, match="swap.colour"):
        load_config(extra)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "override,message",
    [
        ("swap.target=biggest", "swap.target='biggest': should be 'all' or 'largest'"),
        ("landmarks.model=hrnet", "landmarks.model"),
        ("encode.crf=high", "encode.crf='high': should be a valid number"),
        ("encode.watermark=1", "encode.watermark=1: should be a valid boolean"),
        ("detect.thresholds=0.5", "detect.thresholds"),
        # ranges (the schema in pipeline/config.py)
        ("batch_size=-3", "batch_size=-3: should be greater than or equal to 1"),
        ("batch_size=0", "batch_size=0: should be greater than or equal to 1"),
        ("encode.crf=99", "encode.crf=99: should be less than or equal to 63"),
        ("classic.color_smoothing=1.5", "classic.color_smoothing=1.5: should be less than 1"),
        ("detect.min_face_size=-5", "detect.min_face_size=-5: should be greater than or equal to 12"),
        ("swap.source_face=-1", "swap.source_face=-1: should be one of largest, left, right or a face index"),
        ("mask.types=[landmarks, hat]", "mask.types=['landmarks', 'hat']: item 1 should be 'box'"),
        ("classic.turn_fade=[0.5, 0.2]", "classic.turn_fade=[0.5, 0.2]: should be [low, high]"),
        ("ray.actor_groups=[[detect, nope]]", "should be lists of stage names"),
        ("weights.sha256.aei_net=abc", "should be the file's sha256"),
        ("smooth.window=1.5", "smooth.window=1.5: should be a valid integer"),
    ],
)
def test_config_values_are_checked_on_load(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)
    assert load_config(None, ["align.face_scale=1"])["align"]["face_scale"] == 1  # ints and floats mix
    assert load_config(None, ["train.lr=4e-4"])["train"]["lr"] == 4e-4  # YAML 1.1 would read text
    assert load_config(None, ["swap.source_face=2"])["swap"]["source_face"] == 2


def _literal(section: str, key: str) -> tuple:
    """The values a schema field of Literal type takes (inside a list, for ``mask.types``)."""
    field = ConfigSchema.model_fields[section].annotation.model_fields[key].annotation
    while typing.get_origin(field) is not typing.Literal:
        field = typing.get_args(field)[0]
    return typing.get_args(field)


def test_mask_types_agree_with_the_mask_stage():
    from stages.mask import MASK_TYPES

    assert set(_literal("mask", "types")) == set(MASK_TYPES)


def test_stage_names_agree_with_the_chain_the_run_builds(base_cfg):
    from pipeline.run import build_specs

    assert tuple(spec.name for spec in build_specs(base_cfg, None)) == STAGE_NAMES


def test_weight_hashes_name_the_registry(base_cfg):
    """configs/default.yaml's weights.sha256 has a key for every registry file and no other."""
    from models.weights import REGISTRY

    assert set(base_cfg["weights"]["sha256"]) == set(REGISTRY), DEFAULT_CONFIG
    assert set(
        ConfigSchema.model_fields["weights"].annotation.model_fields["sha256"].annotation.model_fields
    ) == set(REGISTRY)


def test_every_registry_file_has_a_network_builder():
    import importlib

    from models.weights import NETWORKS, REGISTRY

    assert {w.network for w in REGISTRY.values()} <= set(NETWORKS)
    for module, factory in NETWORKS.values():
        assert callable(getattr(importlib.import_module(module), factory))


def test_evaluator_choices_agree_with_the_schema():
    from pipeline.evaluation.networks import EXPRESSION_CHOICES, IDENTITY_CHOICES, POSE_CHOICES

    assert _literal("evaluate", "identity") == IDENTITY_CHOICES
    assert _literal("evaluate", "pose") == POSE_CHOICES
    assert _literal("evaluate", "expression") == EXPRESSION_CHOICES


def test_swap_backends_agree_with_the_run(base_cfg):
    """The schema's backends are the registry's, and each builds a swap stage of its own."""
    import copy

    from pipeline.backends import BACKENDS
    from pipeline.run import build_specs

    assert set(_literal("swap", "backend")) == set(BACKENDS)
    classes = set()
    for backend in BACKENDS:
        cfg = copy.deepcopy(base_cfg)
        cfg["swap"]["backend"] = backend
        classes.add(next(s.cls for s in build_specs(cfg, None) if s.name == "swap"))
    assert len(classes) == len(BACKENDS)
