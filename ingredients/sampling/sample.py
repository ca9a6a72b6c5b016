"""Sampling stage: a benchmark x methods -> one folder of `{case_id}.mp4` per method.

    python -m ingredients.sampling.sample --params params.yaml --benchmark FILE --model DIR --out DIR

Methods (params `sample.methods`):
- `ours`: the model as trained (soft routing); also writes `{case_id}.routing.safetensors` (routing
  logits of the last step per injection point on the latent token grid, and `token_geometry`: the
  VAE's spatial and temporal factors and the patch size), which the evaluation's `routing_consistency` compares with the faces it finds;
- `ours_no_router`: the same model, every identity mixed with equal weight (no routing);
- `canvas_only`: the backbone with the reference canvas as first frame, no ID tokens;
- `no_identity`: the backbone with a blank canvas and no ID tokens (text only; the lower bound).
Each video is written atomically and skipped when present, so an interrupted run resumes (temp files
a killed run left in the output folders are removed first); `processes.json` says how many processes
sampled. With several processes (`accelerate
launch`, see configs/accelerate/README.md), the (method, case) list is split between them in a fixed
order; each process skips the videos already present in its share, so a killed multi-process run
resumes per rank, and the files equal a one-process run's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from ingredients.files.atomic import remove_stale_temps, write_json
from ingredients.files.frames import to_uint8
from ingredients.config import load_section, stage_parser
from ingredients.model_folder.folder import load_face_conditioner, load_pipeline
from ingredients.models import IdentityBatch
from ingredients.sampling.runtime import DTYPES, DType, Offload, StepCacheSignal, configure_pipeline
from ingredients.files.video_io import write_video

logger = logging.getLogger(__name__)

METHODS = ("ours", "ours_no_router", "canvas_only", "no_identity")
PROCESSES_FILE = "processes.json"


class SampleParams(BaseModel):
    """The `sample:` section of params.yaml."""

    model_config = ConfigDict(extra="forbid")

    methods: list[str] = Field(default_factory=lambda: list(METHODS))
    steps: int = Field(8, ge=1)
    guidance_scale: float = Field(6.0, ge=0)
    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    fps: float = Field(8.0, gt=0)
    reference_batch_semantics: bool = False
    save_routing: bool = True
    # runtime (ingredients/sampling/runtime.py; also read by `ingredients generate`)
    dtype: DType = Field("float32", description="weights and activations: float32 | bfloat16 | float16 (GPU)")
    vae_tiling: bool = Field(False, description="decode the video in overlapping spatial tiles (memory)")
    vae_slicing: bool = Field(False, description="decode one video of the batch at a time (memory)")
    offload: Offload = Field("none", description="none | model (enable_model_cpu_offload) | sequential "
                                                 "(enable_sequential_cpu_offload); GPU only")
    compile: bool = Field(False, description="torch.compile the transformer (fullgraph)")
    step_cache: StepCacheSignal = Field("off", description="off | first_block | modulated_input (ingredients/pipelines/step_cache.py)")
    step_cache_threshold: float = Field(0.05, ge=0)
    identity_sdpa: bool | None = Field(None, description="None: as the model folder says")
    fused_identity_injection: bool | None = Field(None, description="None: as the model folder says")

    def model_post_init(self, _context: Any) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"sample.methods: unknown {unknown}; allowed: {list(METHODS)}")


@dataclass
class CaseResult:
    case_id: str
    method: str
    skipped: bool


def identities_for(method: str, pipe, references) -> IdentityBatch:
    """ID tokens for a method: the references' own, or none at all (mask all False)."""
    cond, vit = references.id_cond[None], [v[None] for v in references.id_vit_hidden]  # [1, K, ...]
    mask = torch.full(cond.shape[:2], method in ("ours", "ours_no_router"), dtype=torch.bool)
    with torch.no_grad():
        return pipe.transformer.encode_identities(cond, vit, mask)


def canvas_for(method: str, references) -> Image.Image:
    """The first-frame condition: the reference canvas, or a blank one for the text-only baseline."""
    if method == "no_identity":
        return Image.new("RGB", references.canvas.size, (255, 255, 255))
    return references.canvas


def routing_record(logits: list[torch.Tensor], grid: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Routing logits of sample 0 per injection point n, `routing.<n>`: float [F, h, w, K] on the
    latent token grid (latent frames, token rows, token columns)."""
    return {f"routing.{n}": z[0].float().reshape(*grid, -1).numpy() for n, z in enumerate(logits)}


def load_sampling_pipeline(model: Path, params: SampleParams, device: torch.device | str):
    """The model folder's pipeline in `sample.dtype` with the runtime settings applied, on `device`."""
    return configure_pipeline(load_pipeline(model, DTYPES[params.dtype]), params, device)


def sample_benchmark(params: SampleParams, benchmark: Path, model: Path, out: Path, cache_dir: Path | None = None) -> list[CaseResult]:
    """Generate every (method, case) video not yet present; returns what was done."""
    from accelerate import PartialState

    from ingredients.sampling.benchmark import check_identity_counts, read_benchmark

    # without a GPU, gloo: otherwise a torchrun-style launch (configs/accelerate/cpu_ddp.yaml) leaves
    # every process believing it is process 0 of 1, and each samples every case
    state = PartialState(cpu=not torch.cuda.is_available())
    cases = read_benchmark(benchmark)
    if state.is_main_process:  # before any process writes: a killed run's temps must not be cached with `out`
        for folder in [out, *(out / m for m in params.methods)]:
            remove_stale_temps(folder, recursive=folder != out)
    state.wait_for_everyone()
    pipe = load_sampling_pipeline(model, params, state.device)
    check_identity_counts(cases, pipe.transformer.config.max_identities, str(benchmark),
                          f"the model's max_identities ({model}/transformer/config.json)")
    pipe.set_progress_bar_config(disable=True)
    conditioner = load_face_conditioner(model, pipe, cache_dir=cache_dir)
    results: list[CaseResult] = []
    work = [(m, c) for m in params.methods for c in cases]
    with state.split_between_processes(work) as mine:
        for method, case in tqdm(mine, desc=f"sampling (process {state.process_index})", disable=not state.is_local_main_process):
            video_path = out / method / f"{case.case_id}.mp4"
            if video_path.is_file():
                results.append(CaseResult(case.case_id, method, skipped=True))
                continue
            references = conditioner([str(p) for p in case.references])
            want_routing = method == "ours" and params.save_routing
            result = pipe(
                prompt=case.prompt,
                image=canvas_for(method, references),
                identities=identities_for(method, pipe, references),
                height=params.height,
                width=params.width,
                num_frames=params.num_frames,
                num_inference_steps=params.steps,
                guidance_scale=params.guidance_scale,
                generator=torch.Generator().manual_seed(int(case.seed)),
                reference_batch_semantics=params.reference_batch_semantics,
                use_router=method != "ours_no_router",
                return_routing_logits=want_routing,
                output_type="np",
            )
            video = to_uint8(result.frames[0])
            if want_routing:
                from safetensors.numpy import save_file

                from ingredients.files.atomic import atomic_path

                patch = pipe.transformer.config.patch_size
                unit = pipe.vae_scale_factor_spatial * patch
                grid = ((video.shape[0] - 1) // pipe.vae_scale_factor_temporal + 1, video.shape[1] // unit, video.shape[2] // unit)
                # how tokens map to pixels, for the evaluation's masks: a tensor, not safetensors metadata,
                # whose header order varies between processes (the files must be byte-reproducible)
                geometry = np.array([pipe.vae_scale_factor_spatial, pipe.vae_scale_factor_temporal, patch], dtype=np.int64)
                with atomic_path(out / method / f"{case.case_id}.routing.safetensors") as tmp:
                    save_file({**routing_record(result.routing_logits, grid), "token_geometry": geometry}, str(tmp))
            write_video(video_path, video, fps=params.fps)  # last: its presence marks the case done
            results.append(CaseResult(case.case_id, method, skipped=False))
    state.wait_for_everyone()
    if state.is_main_process:
        write_json(out / "samples.json", {"benchmark": str(benchmark), "model": str(model), "params": params.model_dump(),
                                          "methods": {m: sorted(c.case_id for c in cases) for m in params.methods}})
        # how many processes sampled (MLflow's `num_processes` of the stage), apart from samples.json, which
        # is the same whatever the process count
        write_json(out / PROCESSES_FILE, {"num_processes": state.num_processes})
    return results


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser("ingredients.sampling.sample", __doc__)
    parser.add_argument("--benchmark", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True, help="model folder (e.g. the stage-2 output)")
    parser.add_argument("--out", type=Path, required=True, help="one sub-folder per method is written here")
    parser.add_argument("--cache-dir", type=Path, default=Path(".ingredients_cache/references"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_section(args.params, "sample", SampleParams)
    results = sample_benchmark(params, args.benchmark, args.model, args.out, args.cache_dir)
    done = sum(not r.skipped for r in results)
    logger.info("sampled %d videos (%d already present) into %s", done, len(results) - done, args.out)


if __name__ == "__main__":
    main()
