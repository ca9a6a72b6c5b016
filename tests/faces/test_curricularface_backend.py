"""CurricularFace backend: IR-101 key layout, strict loading, embeddings of real faces, the eval runner.

No real CurricularFace weights exist offline, so the network gets random weights (BatchNorm
statistics and PReLU slopes randomised too, so that loading every tensor matters). The
embeddings are therefore meaningless as identities. The tests check the plumbing: the checkpoint
layout, that embeddings match the network, and the error messages.
"""

import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from eval.baselines import make_oracle
from eval.params import eval_params
from eval.run import evaluate
from eval.run_layout import RunLayout, load_faces
from ingredients.data.packaged_photos import load_photos
from instruments.photo_cases import write_photo_cases
from ingredients.faces.base import FaceAnalyzer
from ingredients.faces.curricularface_backend import (
    WEIGHTS_FILE,
    CheckpointMismatchError,
    CurricularFaceAnalyzer,
    build_ir101,
    load_ir101,
    resolve_weights,
)
from ingredients.faces.registry import available_backends, build_analyzer

# Parameter counts worked out by hand from the public IR-101 definitions (not from this code):
# input layer 1,920; stages 222,528 + 3,780,096 + 35,181,312 + 13,118,464; output layer 12,846,592
# (BN2d 1,024 + Linear 25088x512 + 512; BatchNorm1d without affine). The face.evoLVe layout lacks
# one BN (2 x width parameters) per unit: 3x128 + 13x256 + 30x512 + 3x1024 = 22,144 fewer.
TFACE_PARAMS = 65_150_912
EVOLVE_PARAMS = 65_128_768


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random BatchNorm statistics/affines and PReLU slopes (on top of the random conv/linear init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                n = module.running_mean.numel()
                module.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                module.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
                if module.affine:
                    module.weight.copy_(0.5 + torch.rand(n, generator=g))
                    module.bias.copy_(0.1 * torch.randn(n, generator=g))
            elif isinstance(module, torch.nn.PReLU):
                module.weight.copy_(0.1 + 0.3 * torch.rand(module.weight.numel(), generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def random_ir101():
    torch.manual_seed(0)
    return randomize(build_ir101("tface"), seed=0)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory, random_ir101):
    path = tmp_path_factory.mktemp("curricularface") / WEIGHTS_FILE
    torch.save(random_ir101.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def analyzer(weights_file):
    return CurricularFaceAnalyzer(weights=str(weights_file))


@pytest.fixture(scope="module")
def faces(analyzer):
    """(image, largest dlib face) of two real people: hanks, astronaut."""
    photos = load_photos(("hanks", "astronaut"))
    out = {}
    for name in ("hanks", "astronaut"):
        found = analyzer.detect(photos[name])
        assert found, f"dlib found no face in {name}"
        out[name] = (photos[name], max(found, key=lambda f: f.size))
    return out


def test_ir101_has_the_public_checkpoint_layout():
    tface = {k: tuple(v.shape) for k, v in build_ir101("tface").state_dict().items()}
    expected = {
        "input_layer.0.weight": (64, 3, 3, 3), "input_layer.1.running_var": (64,), "input_layer.2.weight": (64,),
        "body.0.res_layer.0.weight": (64,), "body.0.res_layer.1.weight": (64, 64, 3, 3),
        "body.0.res_layer.2.running_mean": (64,), "body.0.res_layer.3.weight": (64,),
        "body.0.res_layer.4.weight": (64, 64, 3, 3), "body.0.res_layer.5.bias": (64,),
        "body.3.shortcut_layer.0.weight": (128, 64, 1, 1), "body.3.shortcut_layer.1.weight": (128,),
        "body.16.shortcut_layer.0.weight": (256, 128, 1, 1), "body.46.shortcut_layer.0.weight": (512, 256, 1, 1),
        "body.48.res_layer.4.weight": (512, 512, 3, 3), "output_layer.0.weight": (512,),
        "output_layer.3.weight": (512, 512 * 7 * 7), "output_layer.3.bias": (512,),
        "output_layer.4.running_mean": (512,), "output_layer.4.num_batches_tracked": (),
    }
    assert {k: tface.get(k) for k in expected} == expected
    assert "output_layer.4.weight" not in tface and "body.49.res_layer.0.weight" not in tface
    # a parameterised shortcut only where the width changes (first unit of stages 2-4)
    assert {k.split(".")[1] for k in tface if "shortcut_layer" in k} == {"3", "16", "46"}
    assert sum(p.numel() for p in build_ir101("tface").parameters()) == TFACE_PARAMS

    evolve = build_ir101("evolve")
    shapes = {k: tuple(v.shape) for k, v in evolve.state_dict().items()}
    assert shapes["body.0.res_layer.2.weight"] == (64,)  # PReLU right after the first conv
    assert shapes["body.0.res_layer.3.weight"] == (64, 64, 3, 3)
    assert "body.0.res_layer.5.weight" not in shapes
    assert sum(p.numel() for p in evolve.parameters()) == EVOLVE_PARAMS


def test_embeddings_match_the_network_on_real_faces(analyzer, random_ir101, faces):
    crops = [analyzer.align(image, face) for image, face in faces.values()]
    assert all(c.shape == (112, 112, 3) and c.dtype == np.uint8 for c in crops)
    emb = analyzer.embed_batch(crops)
    assert emb.shape == (2, 512) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)

    # parity with the network run by hand: RGB, (x / 255 - 0.5) / 0.5, L2-normalised
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        expected = F.normalize(random_ir101(x), dim=1).numpy()
    np.testing.assert_allclose(emb, expected, atol=1e-5)

    single = analyzer.embed(crops[0])
    assert np.array_equal(single, analyzer.embed(crops[0]))  # deterministic
    np.testing.assert_allclose(single, emb[0], atol=1e-5)
    assert float(emb[0] @ emb[1]) < 0.9999  # different faces, different vectors


def test_embed_face_crops_at_224_then_resizes_like_the_reference_code(analyzer, faces):
    image, face = faces["hanks"]
    crop224 = analyzer.align(image, face, 224)
    resized = cv2.resize(crop224, (112, 112), interpolation=cv2.INTER_LINEAR)
    both = analyzer.embed_batch([crop224, resized])
    np.testing.assert_array_equal(both[0], both[1])
    raw = analyzer.embed_face(image, face, normalize=False)
    assert abs(np.linalg.norm(raw) - 1.0) > 1e-3
    np.testing.assert_allclose(raw / np.linalg.norm(raw), both[0], atol=1e-6)


def test_missing_weights_name_the_file_and_how_to_get_it(tmp_path):
    hint = f"hf download BestWishYsh/ConsisID-preview face_encoder/{WEIGHTS_FILE}"
    with pytest.raises(FileNotFoundError, match=r"CurricularFace weights file missing: .*nope\.bin.*" + hint):
        CurricularFaceAnalyzer(weights=str(tmp_path / "nope.bin"))
    with pytest.raises(FileNotFoundError, match=rf"no {WEIGHTS_FILE} in {tmp_path}"):
        resolve_weights(tmp_path)


def test_a_model_folder_is_resolved_to_its_face_encoder_file(tmp_path, weights_file):
    (tmp_path / "face_encoder").mkdir()
    (tmp_path / "face_encoder" / WEIGHTS_FILE).symlink_to(weights_file)
    assert resolve_weights(tmp_path) == tmp_path / "face_encoder" / WEIGHTS_FILE


def test_wrong_keys_and_shapes_are_refused_with_their_names(tmp_path, random_ir101, weights_file):
    state = dict(random_ir101.state_dict())
    state["output_layer.3.weights"] = state.pop("output_layer.3.weight")
    state["body.10.res_layer.1.weight"] = torch.zeros(128, 128, 1, 1)
    bad = tmp_path / "renamed.bin"
    torch.save(state, bad)
    with pytest.raises(CheckpointMismatchError) as info:
        CurricularFaceAnalyzer(weights=str(bad))
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)  # the eval runner reports such a backend as unavailable
    assert message.startswith(f"{bad} does not match the IR-101 backbone (tface layout): ")
    assert "missing keys (1): output_layer.3.weight;" in message
    assert "unexpected keys (1): output_layer.3.weights;" in message
    assert ("shape mismatches (1): body.10.res_layer.1.weight: file (128, 128, 1, 1) "
            "vs model (128, 128, 3, 3)") in message
    assert "hf download" in message

    # the right file forced into the other layout
    with pytest.raises(CheckpointMismatchError, match=r"\(evolve layout\): missing keys .*\(\+\d+ more\)"):
        load_ir101(weights_file, layout="evolve")


class Opaque:
    """A pickled object that weights_only loading must refuse."""


def test_files_that_are_not_state_dicts_are_refused(tmp_path):
    tensor_file, pickle_file, other_file = tmp_path / "t.bin", tmp_path / "p.bin", tmp_path / "o.bin"
    torch.save(torch.zeros(3), tensor_file)
    torch.save({"input_layer.0.weight": Opaque()}, pickle_file)
    torch.save({"conv.weight": torch.zeros(3)}, other_file)
    with pytest.raises(CheckpointMismatchError, match=r"t\.bin is not a state dict .* got Tensor"):
        load_ir101(tensor_file)
    with pytest.raises(CheckpointMismatchError,
                       match=r"refused to load .*p\.bin: it pickles Python objects.*Opaque"):
        load_ir101(pickle_file)
    with pytest.raises(CheckpointMismatchError, match=r"not an IR backbone state dict.*first keys: conv\.weight"):
        load_ir101(other_file)


def test_evolve_layout_with_dataparallel_prefix_is_detected_and_loaded(tmp_path):
    torch.manual_seed(1)
    model = randomize(build_ir101("evolve"), seed=1)
    path = tmp_path / "CurricularFace_Backbone.pth"
    # without num_batches_tracked, as in checkpoints saved by old torch versions
    torch.save({f"module.{k}": v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}, path)
    loaded = load_ir101(path)
    assert loaded.layout == "evolve" and not loaded.training
    expected = model.state_dict()
    got = loaded.state_dict()
    assert list(got) == list(expected)
    assert all(torch.equal(got[k], v) for k, v in expected.items() if not k.endswith("num_batches_tracked"))
    assert all(t.device.type == "cpu" for t in got.values())


def test_half_precision_safetensors_load_as_float32(tmp_path, random_ir101):
    from safetensors.torch import save_file

    half = {k: v.half() if v.is_floating_point() else v for k, v in random_ir101.state_dict().items()}
    path = tmp_path / "ir101.safetensors"
    save_file(half, str(path))
    got = load_ir101(path).state_dict()
    assert all(v.dtype == torch.float32 for k, v in got.items() if not k.endswith("num_batches_tracked"))
    assert all(torch.equal(got[k], v.float() if v.is_floating_point() else v) for k, v in half.items())


def test_registry_builds_it_with_detector_options(weights_file):
    assert "curricularface" in available_backends()
    built = build_analyzer("curricularface", weights=str(weights_file), detector_options={"upsample": 0})
    assert isinstance(built, FaceAnalyzer)
    assert built.name == "curricularface" and built.embedding_dim == 512 and built.verification_threshold == 0.3
    assert built.detector.name == "dlib" and built.detector.upsample == 0
    assert built.identity["layout"] == "tface" and built.identity["weights"].startswith(f"{WEIGHTS_FILE}:")
    with pytest.raises(ValueError, match="detector must be another face backend than 'curricularface'"):
        CurricularFaceAnalyzer(weights=str(weights_file), detector="curricularface")
    with pytest.raises(TypeError, match="bad options for face backend 'insightface'"):
        CurricularFaceAnalyzer(weights=str(weights_file), detector="insightface")


def test_eval_runner_reports_face_sim_curricularface(tmp_path, weights_file):
    bench = write_photo_cases(tmp_path / "bench", {"pair": ("hanks", "grace")})
    oracle = make_oracle(bench, tmp_path / "oracle", build_analyzer("dlib"), n_frames=2)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"eval": {
        "face_backends": ["curricularface"],
        "face_backend_options": {"curricularface": {"weights": str(weights_file)}},
        "metrics": ["face_sim", "face_sim_max", "face_found"],
        "max_frames": 2,
        "face_frame_stride": 2,  # analyse frame 0 only: IR-101 costs ~1 s a face on 2 cores
    }}))
    metrics = evaluate(bench, {"oracle": oracle}, tmp_path / "out", eval_params(params_file))["oracle"]
    missing = json.loads((tmp_path / "out" / "missing.json").read_text()).get("oracle", {})
    assert not missing
    assert set(metrics) >= {"face_sim/curricularface", "face_sim_max/curricularface", "face_found/curricularface"}

    analysis = load_faces(RunLayout(tmp_path / "out").cache_faces("oracle", "pair"))["curricularface"]
    assert analysis.n_frames == 1 and analysis.refs.shape == (2, 512)
    assert analysis.embeddings.shape == (2, 512)  # both people found
    np.testing.assert_allclose(np.linalg.norm(analysis.embeddings, axis=1), 1.0, atol=1e-5)
    per_id = np.stack([m.score for m in analysis.matches]).mean(axis=0)
    assert metrics["face_sim/curricularface"] == pytest.approx(float(per_id.mean()), abs=1e-9)
    assert -1.0 <= metrics["face_sim/curricularface"] <= 1.0
