"""models/files.py: atomic writes (all or nothing, the usual permissions), PNG bytes, sha256; and the
import graph, which runs one way: pipeline -> stages -> models."""

from __future__ import annotations

import ast
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from models.files import png_bytes, sha256_of, sha256_remembered, write_atomic, write_json_atomic, write_png

REPO = Path(__file__).resolve().parents[1]


def test_an_atomic_write_replaces_the_file_whole_with_the_usual_mode(tmp_path):
    target = tmp_path / "sub" / "r.json"
    write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1} and target.read_text().endswith("\n")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    write_json_atomic(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["r.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")

    def fails(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_atomic(target, fails)
    with pytest.raises(ValueError):
        write_json_atomic(target, {"x": float("nan")})  # not JSON
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_png_bytes_are_the_pixels_and_deterministic(tmp_path):
    from PIL import Image

    image = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    assert png_bytes(image) == png_bytes(image.copy())
    write_png(tmp_path / "x.png", image)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "x.png")), image)


def test_sha256_of_a_file_and_remembered_until_it_changes(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc" * 1000)
    assert sha256_of(path, chunk=7) == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert sha256_remembered(path) == sha256_of(path)
    path.write_bytes(b"other, and longer")
    assert sha256_remembered(path) == hashlib.sha256(b"other, and longer").hexdigest()


FLOORS = {"models": set(), "stages": {"models"}, "pipeline": {"stages", "models", "pipeline"}}


@pytest.mark.parametrize("floor", ["models", "stages"])
def test_imports_run_one_way(floor):
    """models imports nothing of stages or pipeline; stages nothing of pipeline (also inside functions)."""
    wrong = []
    for path in sorted((REPO / floor).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in FLOORS and top != floor and top not in FLOORS[floor]:
                    wrong.append(f"{path.name}:{node.lineno} imports {name}")
    assert not wrong, wrong


def test_engine_does_not_import_research_tools():
    """No module directly in pipeline/ but __main__.py (which names the commands) imports pipeline.training
    or pipeline.evaluation, also inside functions: the engine runs without the research tools."""
    research = ("pipeline.training", "pipeline.evaluation")
    wrong = []
    for path in sorted((REPO / "pipeline").glob("*.py")):
        if path.name == "__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            if any(n == r or n.startswith(r + ".") for n in names for r in research):
                wrong.append(f"{path.name}:{node.lineno} imports {', '.join(names)}")
    assert not wrong, wrong
