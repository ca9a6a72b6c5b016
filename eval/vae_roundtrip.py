"""The vae_roundtrip baseline: each case's ground-truth clip (the benchmark's optional `ground_truth`)
encoded and decoded by the model's own VAE at the sampling size, written as `{case_id}.mp4` and
evaluated like any method. It is the ceiling every generated method reaches through that VAE: a
low face score of a generated method splits into what the autoencoder loses (this row) and what the
generator loses (the rest).

    python -m eval.vae_roundtrip --benchmark FILE --model MODEL_FOLDER --out DIR [--params params.yaml]

Size: the `sample:` section's height / width / num_frames, defaulting as sampling does to the
transformer's sample size (sample_height x sample_width latents x the VAE's spatial factor,
sample_frames frames). The clip's first frames are taken (the largest count the VAE decodes back to
the same length, at most num_frames: diffusers' CogVideoX VAE encodes 8 frames at a time after the
first, so 8 k + 1; 5 frames come back as 8), each scaled to cover the sampling size and centre-cropped to it (the training loader's
`cover_crop_transform`: a clip of another aspect is cropped, never squeezed); the latent is the
posterior's mode, so the row is deterministic. A decoded video whose shape differs from what went in
(e.g. tiles that do not fit the size) is an error, never written. Cases without a ground-truth clip
get no video and are listed with the reason in `DIR/absent.json`, which `eval.run` reports as
missing (never a number).

Runtime: as sampling runs the same VAE (`ingredients.sampling.runtime`): on the device the sample
stage samples on (the GPU when there is one), in `sample.dtype`, with `sample.vae_tiling` /
`sample.vae_slicing`. At full size the 49 x 480 x 720 decode alone is about 30 GiB in float32 untiled.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import torch

from ingredients.config import load_section, stage_parser
from ingredients.data.dataset import cover_crop_transform
from ingredients.files.atomic import write_json
from ingredients.files.video_io import read_video, write_video
from ingredients.sampling.benchmark import Case, read_benchmark
from ingredients.sampling.runtime import DTYPES, check_runtime
from ingredients.sampling.sample import SampleParams

logger = logging.getLogger(__name__)

NO_GROUND_TRUTH = "the case has no ground-truth clip in the benchmark (its optional 'ground_truth' key)"


def load_vae(model: Path, params: SampleParams | None = None, device: torch.device | str = "cpu"):
    """The model folder's VAE, with the class its model_index.json names (diffusers), in
    `params.dtype` with `params.vae_tiling` / `params.vae_slicing` applied as sampling applies them,
    on `device`."""
    import diffusers

    params = params or SampleParams()
    check_runtime(params, device)
    index = json.loads((model / "model_index.json").read_text())
    library, class_name = index["vae"]
    if library != "diffusers":
        raise ValueError(f"{model}/model_index.json: vae from {library!r}; only diffusers VAEs are supported")
    vae = getattr(diffusers, class_name).from_pretrained(model / "vae", torch_dtype=DTYPES[params.dtype]).eval()
    if params.vae_slicing:
        vae.enable_slicing()
    if params.vae_tiling:
        vae.enable_tiling()  # the VAE's own tile sizes, as runtime.configure_pipeline switches it
    return vae.to(device)


def sampling_device() -> torch.device:
    """The device the sample stage samples on (accelerate's: the GPU when there is one)."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available()).device


def sampling_size(model: Path, vae, params: SampleParams) -> tuple[int, int, int]:
    """(num_frames, height, width) sampling uses: the sample: section, else the transformer's config."""
    cfg = json.loads((model / "transformer" / "config.json").read_text())
    spatial = 2 ** (len(vae.config.block_out_channels) - 1)
    return (params.num_frames or int(cfg["sample_frames"]), params.height or int(cfg["sample_height"]) * spatial,
            params.width or int(cfg["sample_width"]) * spatial)


def decodable_frames(available: int, wanted: int, step: int) -> int:
    """The largest step x k + 1 frame count <= min(available, wanted): the counts the VAE decodes back
    to the same length (CogVideoX's: step = its num_sample_frames_batch_size, 8)."""
    n = min(available, wanted)
    if n < 1:
        raise ValueError(f"a ground-truth clip needs at least 1 frame, got {available}")
    return (n - 1) // step * step + 1


def cover_crop(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [H0, W0, 3] scaled to cover height x width and centre-cropped to it (aspect kept)."""
    h0, w0 = frame.shape[:2]
    scale, dx, dy = cover_crop_transform(h0, w0, height, width)
    rw, rh = max(width, int(round(w0 * scale))), max(height, int(round(h0 * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(frame, (rw, rh), interpolation=interp)  # [rh, rw, 3]
    x0, y0 = min(max(int(round(-dx)), 0), rw - width), min(max(int(round(-dy)), 0), rh - height)
    return resized[y0 : y0 + height, x0 : x0 + width]


@torch.no_grad()
def roundtrip(vae, frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 frames [F, H0, W0, 3] -> cover-cropped to height x width, VAE-encoded (posterior mode)
    and decoded in the VAE's dtype on its device, uint8 [F, height, width, 3]."""
    fitted = np.stack([cover_crop(f, height, width) for f in frames])
    x = torch.from_numpy(fitted).float().div(127.5).sub(1.0)  # [F, H, W, 3] in [-1, 1]
    x = x.permute(3, 0, 1, 2)[None].to(device=vae.device, dtype=vae.dtype)  # [F, H, W, 3] -> [1, 3, F, H, W]
    latent = vae.encode(x).latent_dist.mode()
    out = vae.decode(latent).sample[0]  # [3, F, H, W]
    if tuple(out.shape[1:]) != (len(frames), height, width):
        raise ValueError(f"the VAE decoded {len(frames)} x {height} x {width} (frames x height x width) to "
                         f"{' x '.join(map(str, out.shape[1:]))}"
                         + (f"; its tiles ({vae.tile_sample_min_height} x {vae.tile_sample_min_width}) do not fit "
                            "this size: set sample.vae_tiling: false" if getattr(vae, "use_tiling", False) else ""))
    out = out.float().clamp(-1, 1).add(1).mul(127.5).round().byte().cpu()
    return out.permute(1, 2, 3, 0).numpy()  # [3, F, H, W] -> [F, H, W, 3]


def write_roundtrips(cases: list[Case], model: Path, out: Path, params: SampleParams) -> dict[str, str]:
    """Write `{case_id}.mp4` for every case with a ground-truth clip; returns {case_id: reason} of the
    others (also written to out/absent.json)."""
    vae = load_vae(model, params, sampling_device())
    num_frames, height, width = sampling_size(model, vae, params)
    step = int(getattr(vae, "num_sample_frames_batch_size", getattr(vae.config, "temporal_compression_ratio", 4)))
    out.mkdir(parents=True, exist_ok=True)
    absent = {}
    for case in cases:
        if case.ground_truth is None:
            absent[case.case_id] = NO_GROUND_TRUTH
            continue
        clip, _fps = read_video(case.ground_truth)
        clip = clip[:decodable_frames(len(clip), num_frames, step)]
        write_video(out / f"{case.case_id}.mp4", roundtrip(vae, clip, height, width), fps=params.fps)
        logger.info("%s: %d frames of %s through the VAE at %dx%d (%s, %s)", case.case_id, len(clip),
                    case.ground_truth.name, width, height, vae.dtype, vae.device)
    write_json(out / "absent.json", absent)
    return absent


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("eval.vae_roundtrip", __doc__)
    parser.add_argument("--benchmark", required=True)
    parser.add_argument("--model", required=True, type=Path, help="model folder whose VAE is used (e.g. models/stage2/model)")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = (load_section(args.params, "sample", SampleParams)
              if args.params else SampleParams())
    cases = read_benchmark(args.benchmark)
    absent = write_roundtrips(cases, args.model, args.out, params)
    logger.info("vae_roundtrip: %d of %d cases have a ground-truth clip", len(cases) - len(absent), len(cases))


if __name__ == "__main__":
    main()
