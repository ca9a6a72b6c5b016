import pytest
import yaml

from ingredients.files.atomic import atomic_path, write_json
from eval.params import DEFAULT_METRICS, EvalParams, eval_params, params_from_dict
from ingredients.config import ParamsError
from eval.registry import get_metric, metric_names


def test_defaults_are_offline():
    p = eval_params(None)
    assert p == EvalParams()
    assert p.face_backends == ("dlib",) and p.clip.weights is None and p.flow.method == "farneback"
    assert set(p.metrics) == set(metric_names()) == set(DEFAULT_METRICS)
    assert get_metric("fid_face").level == "aggregate" and get_metric("face_sim").level == "video"


def test_eval_section_of_a_params_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train": {"lr": 1}, "eval": {"max_frames": 25, "clip": {"model": "ViT-B-32"},
                                                                 "metrics": ["face_sim", "flicker"]}}))
    p = eval_params(path)
    assert p.max_frames == 25 and p.clip.model == "ViT-B-32" and p.metrics == ("face_sim", "flicker")
    assert params_from_dict(p.to_dict()) == p  # round trip through JSON-able dict


@pytest.mark.parametrize("data, message", [
    ({"max_frame": 3}, r"eval.max_frame: unknown key; allowed keys here: clip, face_backend_options"),
    ({"clip": {"weight": "x"}}, r"eval.clip.weight: unknown key; allowed keys here: batch_size, config, model, weights"),
    ({"flow": {"method": "lk"}}, "eval.flow.method: Input should be 'farneback' or 'raft'"),
    ({"face_frame_stride": 0}, "eval.face_frame_stride: Input should be greater than or equal to 1"),
    ({"metrics": "face_sim"}, "eval.metrics: Value error, expected a list of names"),
    ({"metrics": ["flicker", "flicker"]}, "eval.metrics: Value error, duplicate names"),
])
def test_bad_params_name_the_key(data, message):
    with pytest.raises(ParamsError, match=message):
        params_from_dict(data)


def test_unknown_metric_lists_the_known_ones():
    with pytest.raises(KeyError, match="known metrics: .*face_sim"):
        get_metric("facesim")


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("interrupted")
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]
