"""Identity consistency (pipeline/evaluation/consistency.py): the math on constructed embeddings, and through
the evaluator on media: a copy of the target is as steady as the target and not moved towards the source
(a still image repeated is perfectly steady), another person in every frame is unsteady."""

from __future__ import annotations

import itertools
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.evaluation.consistency import (
    cosine_to,
    cross_target,
    mean_direction,
    mean_pairwise_cosine,
    spread,
    unit_rows,
    within_video,
)
from pipeline.evaluation.evaluate import evaluate, summary_line
from tests.conftest import VIDEOS
from tests.evaluation.conftest import SOURCE

D = 128  # dlib's descriptor size


def identities(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, D) float64``: n unrelated identities (random directions, lengths about sqrt(D))."""
    return rng.standard_normal((n, D))


# ----------------------------------------------------------------------------------------- the math


def test_mean_pairwise_cosine_is_the_mean_over_pairs():
    """The O(F D) sum form equals the mean of the F (F - 1) / 2 pairwise cosines, for rows of any length
    and float32 input; fewer than two rows have no pairs."""
    rng = np.random.default_rng(0)
    e = (rng.standard_normal((7, D)) + 0.5) * rng.uniform(0.1, 3.0, (7, 1))
    pairs = [float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in itertools.combinations(e, 2)]
    assert mean_pairwise_cosine(e.astype(np.float32)) == pytest.approx(np.mean(pairs), abs=1e-6)
    assert mean_pairwise_cosine(e[:1]) is None and mean_pairwise_cosine(np.zeros((0, D))) is None


def test_identical_embeddings_are_perfectly_steady():
    """A still image repeated: every frame the same embedding (any length) → steadiness 1, no spread; as
    its own original it is not moved."""
    rng = np.random.default_rng(1)
    face, source = identities(rng, 2)
    frames = np.tile(face * 1.4, (20, 1))
    r = within_video(frames, frames, source)
    assert r["frames"] == 20
    assert r["steadiness"] == pytest.approx(1.0, abs=1e-12)
    assert r["steadiness_original"] == pytest.approx(1.0, abs=1e-12)
    assert r["source_similarity"]["std"] == pytest.approx(0.0, abs=1e-12)
    assert r["source_similarity"]["range"] == pytest.approx(0.0, abs=1e-12)
    expected = float(unit_rows(face) @ unit_rows(source))
    assert r["source_similarity"]["mean"] == pytest.approx(expected, abs=1e-12)
    assert r["source_shift"] == pytest.approx(0.0, abs=1e-12)
    assert r["original_similarity"] == pytest.approx(1.0, abs=1e-12)


def test_random_identity_per_frame_is_unsteady():
    """Another identity in every frame scores near 0 (unrelated directions), far below one identity with
    per-frame noise (pose, light) and below what a same-person threshold would allow; its similarity to
    the source spreads."""
    rng = np.random.default_rng(2)
    person, source = identities(rng, 2)
    noisy = person + 0.3 * rng.standard_normal((40, D))  # one person, frames differ a little
    random = identities(rng, 40)
    steady = within_video(noisy, noisy, source)
    unsteady = within_video(random, noisy, source)
    assert steady["steadiness"] > 0.9
    assert abs(unsteady["steadiness"]) < 0.05
    assert unsteady["steadiness_original"] == steady["steadiness"]
    assert unsteady["source_similarity"]["std"] > 2 * steady["source_similarity"]["std"]
    assert unsteady["source_similarity"]["range"] > 2 * steady["source_similarity"]["range"]
    assert unsteady["original_similarity"] < 0.2


def test_copy_of_the_target_is_not_moved_and_a_swap_is():
    """Output = original (a varying real face): steadiness equals the original's, no shift to the source,
    similarity 1 to the original. An output pulled towards the source shows a positive shift and a lower
    similarity to the original."""
    rng = np.random.default_rng(3)
    target, source = identities(rng, 2)
    original = target + 0.4 * rng.standard_normal((30, D))
    copy = within_video(original.copy(), original, source)
    assert copy["steadiness"] == pytest.approx(copy["steadiness_original"], abs=1e-12)
    assert copy["steadiness"] < 0.99  # the target itself varies: "steady" means as steady as the target
    assert copy["source_similarity"] == pytest.approx(copy["source_similarity_original"], abs=1e-12)
    assert copy["source_shift"] == pytest.approx(0.0, abs=1e-12)
    assert copy["original_similarity"] == pytest.approx(1.0, abs=1e-12)

    swapped = unit_rows(original) + 2.0 * unit_rows(source)  # the source's identity, some target left
    moved = within_video(swapped, original, source)
    assert moved["source_shift"] > 0.5
    assert moved["source_similarity"]["mean"] > copy["source_similarity"]["mean"] + 0.5
    assert moved["original_similarity"] < 0.7
    assert moved["steadiness"] > copy["steadiness"]  # the constant source part steadies it


def test_within_video_checks_its_inputs_and_handles_no_frames():
    source = np.ones(D)
    with pytest.raises(ValueError, match="frame by frame"):
        within_video(np.ones((3, D)), np.ones((2, D)), source)
    empty = within_video(np.array([]), np.array([]), source)
    assert empty["frames"] == 0 and empty["steadiness"] is None and empty["source_shift"] is None
    assert empty["source_similarity"] == {"mean": None, "std": None, "range": None}


def test_spread_cosine_and_mean_direction():
    assert spread(np.array([0.1, 0.3])) == pytest.approx({"mean": 0.2, "std": 0.1, "range": 0.2})
    e = np.array([[3.0, 0.0], [0.0, 0.5]])
    assert cosine_to(e, np.array([2.0, 2.0])) == pytest.approx([2**-0.5, 2**-0.5])
    assert mean_direction(e) == pytest.approx([2**-0.5, 2**-0.5])  # of the unit rows, not the raw ones
    assert mean_direction(np.array([[1.0, 0.0], [-1.0, 0.0]])) is None
    assert mean_direction(np.zeros((0, 2))) is None


def test_cross_target_is_alike_for_one_identity_and_not_for_many():
    """One source on three targets: the same direction everywhere → 1.0; each target's own identity kept
    → near 0 for unrelated identities. Sources with one output are left out and N counts the rest."""
    rng = np.random.default_rng(4)
    face = unit_rows(identities(rng, 1)[0])
    kept = [unit_rows(v) for v in identities(rng, 3)]
    r = cross_target({"001": [face, face, face], "002": kept, "003": [face]})
    assert r["sources"] == 2 and r["outputs"] == 6
    assert r["per_source"]["001"] == pytest.approx(1.0, abs=1e-12)
    assert abs(r["per_source"]["002"]) < 0.3
    assert r["mean"] == pytest.approx((r["per_source"]["001"] + r["per_source"]["002"]) / 2)
    none = cross_target({"003": [face]})
    assert none == {"mean": None, "sources": 0, "outputs": 0, "per_source": {}}


# ----------------------------------------------------------------------------------------- FF++ totals


def scored_entry(source: str, output: np.ndarray | None, original: np.ndarray, steadiness: float) -> dict:
    """A results.json video entry as ``ffpp.run_benchmark`` writes it, with the fields totals read."""
    within = within_video(np.tile(original, (3, 1)), np.tile(original, (3, 1)), original)
    within["steadiness"] = steadiness
    return {
        "status": "ok",
        "source": source,
        "per_frame": [{"index": 0, "correct": True, "pose_error_deg": 1.0, "expression_error_iod": 0.1}],
        "frames": {"no_face_original": 0, "no_face_output": 0},
        "flicker": 1.0,
        "integrity": {"all_ok": True},
        "seconds": {"total": 1.0},
        "consistency": within,
        "identity_direction": {
            "output": None if output is None else [float(x) for x in unit_rows(output)],
            "original": [float(x) for x in unit_rows(original)],
        },
    }


def test_ffpp_totals_and_table_report_consistency():
    """One source on three targets, swapped alike: cross-target near 1 over N = 1 source, its targets'
    originals near 0; a source with one video, a failed video and one scored before the measure existed
    (no ``identity_direction``) are left out. results.md shows the numbers, and n/a for a method scored
    before them."""
    from pipeline.evaluation.ffpp_report import results_markdown
    from pipeline.evaluation.ffpp_score import totals_of

    rng = np.random.default_rng(5)
    face = identities(rng, 1)[0]
    targets = identities(rng, 5)
    old = scored_entry("009", face, targets[4], 0.5)
    del old["identity_direction"], old["consistency"]
    videos = {
        "000_001": scored_entry("001", face + 0.1 * rng.standard_normal(D), targets[0], 0.95),
        "002_001": scored_entry("001", face + 0.1 * rng.standard_normal(D), targets[1], 0.93),
        "003_001": scored_entry("001", face + 0.1 * rng.standard_normal(D), targets[2], 0.91),
        "001_000": scored_entry("000", face, targets[3], 0.90),
        "004_009": old,
        "005_009": {"status": "error", "source": "009", "error": "swap failed"},
        "006_009": scored_entry("009", None, targets[4], 0.80),  # no frame scored: no direction
    }
    t = totals_of(videos)
    assert t["videos"] == 6 and t["errors"] == 1
    assert t["cross_target_sources"] == 1 and t["cross_target_videos"] == 3
    assert t["cross_target"] > 0.95 and abs(t["cross_target_originals"]) < 0.3
    assert set(t["cross_target_per_source"]) == {"001"}
    assert t["steadiness"] == pytest.approx(np.mean([0.95, 0.93, 0.91, 0.90, 0.80]))
    assert t["steadiness_original"] == pytest.approx(1.0)
    assert t["source_shift"] == pytest.approx(0.0, abs=1e-12)

    results = {
        "split": "test",
        "compression": "c23",
        "ffpp": {"frames_per_video": 10},
        "evaluate": {"expression": "landmarks"},
        "evaluator": {"identity": "dlib", "pose": "pnp", "expression": "landmarks"},
        "gallery": ["000", "001"],
        "identities": {},
        "methods": {
            "new": {"totals": t, "videos": {}},
            "before": {"totals": {k: v for k, v in t.items() if "steadi" not in k and "cross" not in k}},
        },
    }
    results["methods"]["before"]["videos"] = {}
    table = results_markdown(results)
    row = next(line for line in table.splitlines() if line.startswith("| new |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    header = next(line for line in table.splitlines() if line.startswith("| method |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert len(cells) == len(columns)
    assert cells[columns.index("steadiness (orig)")] == f"{t['steadiness']:.3f} (1.000)"
    assert cells[columns.index("cross-target (targets), N")] == (
        f"{t['cross_target']:.3f} ({t['cross_target_originals']:.3f}), 1"
    )
    assert "| before |" in table and "n/a (n/a)" in table


# ----------------------------------------------------------------------------------------- evaluator


STILLS = [  # 512² talking heads, frame 0: five people whose dlib boxes overlap the first's (IoU >= 0.39)
    "sadtalker_WDA_KatieHill_000.mp4",
    "sadtalker_WDA_AlexandriaOcasioCortez_000.mp4",
    "liveportrait_d12.mp4",
    "real3dportrait_May_5s.mp4",
    "liveportrait_d10.mp4",
]
STILL_FRAMES = len(STILLS)


def first_frame(video: Path) -> np.ndarray:
    with av.open(str(video)) as f:
        return next(f.decode(video=0)).to_ndarray(format="rgb24")


def write_lossless(path: Path, frames: list[np.ndarray]) -> Path:
    """``frames`` of ``(H, W, 3) uint8`` RGB as a 25 fps libx264 video, lossless (crf 0): equal frames
    decode to equal pixels. Video only."""
    with av.open(str(path), "w") as dst:
        stream = dst.add_stream("libx264", rate=25)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "0"}  # with stream.time_base set, lossless packets fail to mux (PyAV 18)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            dst.mux(stream.encode(frame))
        dst.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def stills(tmp_path_factory, data_dir) -> tuple[Path, Path]:
    """(the first person's first frame repeated, the five people's first frames in turn), 5 frames each."""
    folder = tmp_path_factory.mktemp("consistency")
    faces = [first_frame(VIDEOS / name) for name in STILLS]
    repeated = write_lossless(folder / "still.mp4", [faces[0]] * STILL_FRAMES)
    turns = write_lossless(folder / "turns.mp4", [faces[i % len(faces)] for i in range(STILL_FRAMES)])
    return repeated, turns


@pytest.mark.slow
def test_evaluator_a_repeated_still_is_perfectly_steady_and_other_people_are_not(stills, base_cfg):
    """Through the evaluator (dlib): a still repeated, scored against itself, has steadiness 1.0 and
    no spread; a video showing another person in every frame, scored against that still, is well below
    the same-person range (dlib: 0.94-0.98 between two photos of one person) and below its original."""
    repeated, turns = stills
    same = evaluate(repeated, repeated, SOURCE, base_cfg)["consistency"]
    assert same["frames"] == STILL_FRAMES
    assert same["steadiness"] == pytest.approx(1.0, abs=1e-9)
    assert same["steadiness_original"] == pytest.approx(1.0, abs=1e-9)
    assert same["source_similarity"]["std"] == pytest.approx(0.0, abs=1e-9)
    assert same["source_shift"] == pytest.approx(0.0, abs=1e-12)
    other = evaluate(repeated, turns, SOURCE, base_cfg)["consistency"]
    assert other["frames"] == STILL_FRAMES  # every person's face was found over the still's
    assert other["steadiness"] < 0.9
    assert other["steadiness_original"] == pytest.approx(1.0, abs=1e-9)
    assert other["source_similarity"]["std"] > 0.01 and other["source_similarity"]["range"] > 0.03
    assert other["original_similarity"] < 0.95


@pytest.mark.slow
def test_evaluator_a_copy_of_the_clip_is_as_steady_as_the_clip_and_not_moved(clip, base_cfg):
    """The shared clip scored against its own copy (every 4th of 20 frames): the output's steadiness is
    the original's (a talking face varies, so below 1), no shift towards the source, similarity 1 to the
    original; the summary line reports the steadiness."""
    copy = clip.with_name("copy_consistency.mp4")
    shutil.copyfile(clip, copy)
    r = evaluate(clip, copy, SOURCE, base_cfg, every=4, max_frames=20)
    cons = r["consistency"]
    assert cons["frames"] == r["identity"]["faces"] == 5
    assert cons["steadiness"] == cons["steadiness_original"]
    assert 0.9 < cons["steadiness"] < 1.0 - 1e-6
    assert cons["source_similarity"] == cons["source_similarity_original"]
    assert cons["source_similarity"]["std"] > 0.0
    assert cons["source_shift"] == 0.0
    assert cons["original_similarity"] == pytest.approx(1.0, abs=1e-12)
    line = summary_line(r)
    assert f"steadiness {cons['steadiness']:.3f} (orig {cons['steadiness_original']:.3f})" in line
