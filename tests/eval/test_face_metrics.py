"""Face metrics: exact values on hand-made analyses, and properties on real faces (dlib backend)."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from eval.baselines import carphone_path, face_crop, oracle_frames
from eval.metrics import face_found, face_sim, face_sim_max, id_confusion
from eval.registry import MetricUnavailable
from eval.video_faces import VideoFaces, analyze_frames, embed_reference
from ingredients.files.video_io import read_video

E = np.eye(4, dtype=np.float32)


def hand_made(frames: list[list[tuple[np.ndarray, tuple]]], refs=E[:2], threshold=0.9) -> VideoFaces:
    """VideoFaces from per-frame lists of (embedding, box)."""
    idx, boxes, embs = [], [], []
    for t, faces in enumerate(frames):
        for emb, box in faces:
            idx.append(t)
            boxes.append(box)
            embs.append(emb)
    return VideoFaces("fake", threshold, len(frames), np.asarray(refs, np.float32), np.asarray(idx, np.int64),
                      np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(embs, np.float32).reshape(-1, 4))


LEFT, RIGHT = (0, 0, 50, 50), (100, 0, 150, 50)


def test_face_sim_per_identity_and_missing_identity_scores_zero():
    # frame 0: both identities; frame 1: only ref0; frame 2: nobody
    vf = hand_made([[(E[0], LEFT), (E[1], RIGHT)], [(E[0], LEFT)], []])
    out = face_sim.summarize(vf)
    assert out["/id0"] == pytest.approx(2 / 3)
    assert out["/id1"] == pytest.approx(1 / 3)
    assert out[""] == pytest.approx(0.5)
    # the authors' script raises on the faceless frame: no value (was 1.0, skipping the frame)
    with pytest.raises(MetricUnavailable, match="sampled frame 23 of 24 has no face"):
        face_sim_max.summarize(vf)
    assert face_sim_max.summarize(hand_made([[(E[0], LEFT), (E[1], RIGHT)], [(E[0], LEFT)]]))[""] == pytest.approx(1.0)
    assert face_found.summarize(vf)[""] == pytest.approx(1 / 3)


def test_a_dissimilar_matched_face_scores_zero_not_below_no_face():
    """A matched face with negative cosine is clamped at 0, the score of a reference with no face."""
    vf = hand_made([[(-0.6 * E[0] + 0.8 * E[2], LEFT), (E[1], RIGHT)], [(E[1], RIGHT)]])
    out = face_sim.summarize(vf)
    assert out["/id0"] == 0.0  # frame 0: matched at cosine -0.6 -> 0; frame 1: unmatched -> 0
    assert out["/id1"] == pytest.approx(1.0) and out[""] == pytest.approx(0.5)
    assert face_sim.matched_scores(vf).min() == 0.0


def test_no_face_in_the_video_is_missing_not_zero():
    """face_sim_max and id_confusion have no value for a faceless video: missing with the reason."""
    faceless = hand_made([[], [], []])
    with pytest.raises(MetricUnavailable, match="sampled frame 0 of 24 has no face"):
        face_sim_max.summarize(faceless)
    for metric in (id_confusion,):
        with pytest.raises(MetricUnavailable, match="no face found by 'fake' in any of the 3 analysed frames"):
            metric.summarize(faceless)
        ctx = SimpleNamespace(params=SimpleNamespace(face_backends=("fake",)), faces=lambda backend: faceless)
        result = metric.compute(ctx)
        name = f"{metric.__name__.rsplit('.', 1)[1]}/fake"
        assert result.values == {} and "no face found" in result.missing[name]
    # face_sim and face_found keep their values: every reference is absent in every frame
    assert face_sim.summarize(faceless)[""] == 0.0 and face_found.summarize(faceless)[""] == 0.0
    # one face somewhere is enough for a value
    assert id_confusion.summarize(hand_made([[], [(E[0], LEFT)]]))[""] == 0.0


def test_id_confusion_counts_misassigned_and_swapped_frames():
    both_ref0 = [(E[0], LEFT), ((E[0] + 0.1 * E[2]) / np.linalg.norm(E[0] + 0.1 * E[2]), RIGHT)]
    vf = hand_made([
        [(E[0], LEFT), (E[1], RIGHT)],
        [(E[0], LEFT), (E[1], RIGHT)],
        [(E[1], LEFT), (E[0], RIGHT)],  # swap
        [(E[1], LEFT), (E[0], RIGHT)],
        both_ref0,  # ref0 rendered twice: one face misassigned to ref1 (and a swap on the right)
    ])
    mis, swap = id_confusion.confusion_flags(vf)
    assert mis.tolist() == [False, False, False, False, True]
    assert swap.tolist() == [False, False, True, False, True]
    out = id_confusion.summarize(vf)
    assert out[""] == pytest.approx(2 / 5)
    assert out["/misassigned"] == pytest.approx(1 / 5) and out["/swap"] == pytest.approx(2 / 5)


# ---- real faces (dlib) ---------------------------------------------------------------------------

N_FRAMES = 8


@pytest.fixture(scope="module")
def refs(dlib_analyzer, photos):
    return {name: embed_reference(dlib_analyzer, img) for name, img in photos.items()}


@pytest.fixture(scope="module")
def two_person(dlib_analyzer, photos):
    """Astronaut and Grace Hopper side by side over a moving background, analysed once."""
    frames = oracle_frames([photos["astronaut"], photos["grace"]], dlib_analyzer, n_frames=N_FRAMES, size=256)
    return analyze_frames(dlib_analyzer, frames, np.zeros((2, 128), np.float32))


def with_refs(vf: VideoFaces, refs: dict, names: tuple[str, ...]) -> VideoFaces:
    return dataclasses.replace(vf, refs=np.stack([refs[n] for n in names]))


def test_real_person_video_matches_their_photo_better_than_someone_else(dlib_analyzer, refs):
    """carphone: a real video; reference = a face crop from its first frame, scored on later frames."""
    clip, _fps = read_video(carphone_path())
    own = embed_reference(dlib_analyzer, face_crop(clip[0], dlib_analyzer))
    vf = analyze_frames(dlib_analyzer, clip[60:60 + N_FRAMES], np.stack([own]))
    assert len(vf.frame) >= N_FRAMES - 1  # the driver is found in (nearly) every frame
    same = face_sim.summarize(vf)[""]
    others = {n: face_sim.summarize(dataclasses.replace(vf, refs=refs[n][None]))[""] for n in ("hanks", "grace", "astronaut")}
    assert same > dlib_analyzer.verification_threshold
    assert all(same > o + 0.03 for o in others.values()), (same, others)


def test_moved_photo_matches_its_person(dlib_analyzer, photos, refs):
    frames = oracle_frames([photos["hanks"]], dlib_analyzer, n_frames=N_FRAMES, size=256, seed=3)
    vf = analyze_frames(dlib_analyzer, frames, refs["hanks"][None])
    same = face_sim.summarize(vf)[""]
    other = face_sim.summarize(dataclasses.replace(vf, refs=refs["grace"][None]))[""]
    assert same > 0.95 and same > other + 0.05
    assert face_found.summarize(vf)[""] == 1.0


def test_two_people_right_pair_beats_wrong_pair_and_max_variant_hides_it(two_person, refs):
    right = with_refs(two_person, refs, ("astronaut", "grace"))
    wrong = with_refs(two_person, refs, ("astronaut", "hanks"))
    assert len(two_person.frame) == 2 * N_FRAMES
    sim_right, sim_wrong = face_sim.summarize(right), face_sim.summarize(wrong)
    max_right, max_wrong = face_sim_max.summarize(right)[""], face_sim_max.summarize(wrong)[""]
    # the wrong identity drops one-to-one FaceSim clearly, the max-over-pairs variant barely moves
    assert sim_right[""] - sim_wrong[""] > 0.04
    assert sim_wrong["/id0"] == pytest.approx(sim_right["/id0"])  # the astronaut is still matched
    assert sim_right["/id1"] - sim_wrong["/id1"] > 0.08
    assert abs(max_right - max_wrong) < 0.01
    assert face_found.summarize(right)[""] == 1.0 and face_found.summarize(wrong)[""] == 0.0
    # identity order does not matter
    flipped = face_sim.summarize(with_refs(two_person, refs, ("grace", "astronaut")))
    assert flipped[""] == pytest.approx(sim_right[""])
    assert flipped["/id0"] == pytest.approx(sim_right["/id1"])


def test_identities_swapping_sides_raise_id_confusion(dlib_analyzer, photos, refs, two_person):
    frames = oracle_frames([photos["astronaut"], photos["grace"]], dlib_analyzer, n_frames=N_FRAMES,
                           size=256, swap_at=N_FRAMES // 2)
    swapped_vf = analyze_frames(dlib_analyzer, frames, np.stack([refs["astronaut"], refs["grace"]]))
    steady = id_confusion.summarize(with_refs(two_person, refs, ("astronaut", "grace")))
    swapped = id_confusion.summarize(swapped_vf)
    assert steady[""] == 0.0
    assert swapped["/swap"] == pytest.approx(1 / N_FRAMES)  # exactly the swap frame
    assert swapped[""] > steady[""]
    # face_sim does not see the swap: both identities are still present
    assert face_sim.summarize(swapped_vf)[""] > 0.95
