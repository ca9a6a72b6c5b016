"""Sampling one video through the pipeline's own `__call__`, with fake weights: each phase measured.

The sample stage's path (`ingredients.sampling.sample`): the pipeline in the sampling dtype,
`configure_pipeline` with the stage's runtime keys (step cache, identity switches, VAE tiling and
slicing; offload is the plan's arithmetic, below, so the fake run keeps every weight in place),
`identities_for("ours", ...)` (ID tokens once per video), then `IngredientsPipeline.__call__` for
`STEPS` guided denoising steps and its decode (`output_type="pt"`: the decode and post-processing of
"np" without the final copy to numpy, which a fake tensor cannot give). The other decode (tiled when
the stage decodes untiled and the reverse) runs through the pipeline's `decode_latents` too. With
`--backbone-only`, diffusers' own `CogVideoXImageToVideoPipeline` with the bare backbone.

Phases are measured by hooks on the components (text encoder calls, transformer calls, decode), each
as its peak over the live bytes when the call began (the weights) and its FLOPs. Where weights live
during each phase is the offload mode's business (`sampling_peak_bytes`): none keeps all on the
device, `model` (diffusers' model CPU offload) one component at a time, `sequential` one leaf module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import PIL.Image
import torch
from diffusers import CogVideoXDPMScheduler, CogVideoXImageToVideoPipeline, CogVideoXTransformer3DModel
from torch import nn

from ingredients.plan.fake_run import FakeRun, build_on_meta
from ingredients.plan.model_configs import ProfileModels, full_transformer_config

COMPONENTS = ("text_encoder", "transformer", "vae")
GIB = float(2**30)
STEPS = 2  # guided denoising steps run per fake video (per-step cost is their mean)


@dataclass
class SampleMeasurement:
    """Bytes and FLOPs of the phases of one sampled video (batch 1)."""

    parameters: dict[str, int]              # numel per component
    weight_bytes: dict[str, int]            # per component, in the sampling dtype
    largest_module_bytes: dict[str, int]    # per component: the biggest module holding parameters itself
    phase_peak_bytes: dict[str, int]        # text, identities, denoise, decode, decode_tiled: over the weights
    phase_flops: dict[str, int]             # per call: text (both prompts), identities, denoise (one step), decode
    flops_by_op: dict[str, int] = field(default_factory=dict)  # of one denoising step
    output_shape: tuple[int, ...] = ()      # the decoded video [B, F, C, H, W]


class PhaseHooks:
    """Peak bytes and FLOPs of every call of a phase (max of peaks, sum of FLOPs). Peaks are over the
    live bytes at `begin()` (the weights, before the video), so what earlier phases leave alive (prompt
    embeddings, ID tokens, latents) counts in the later ones."""

    def __init__(self, run: FakeRun) -> None:
        self.run = run
        self.base: int | None = None
        self.peaks: dict[str, int] = {}
        self.flops: dict[str, list[int]] = {}
        self.ops: dict[str, dict[str, int]] = {}
        self._open: list[tuple[str, int, int, dict]] = []

    def begin(self) -> None:
        """The video starts: phase peaks are counted over the bytes live now."""
        self.base = self.run.memory.live

    def start(self, name: str) -> None:
        m = self.run.memory
        self._open.append((name, m.live, m.peak, dict(self.run.flops.by_op)))
        m.reset_peak()

    def stop(self, name: str) -> None:
        m = self.run.memory
        _, live0, outer_peak, ops0 = self._open.pop()
        self.peaks[name] = max(self.peaks.get(name, 0), m.peak - (live0 if self.base is None else self.base))
        ops = {k: v - ops0.get(k, 0) for k, v in self.run.flops.by_op.items() if v - ops0.get(k, 0)}
        self.flops.setdefault(name, []).append(sum(ops.values()))
        self.ops[name] = ops
        m.peak = max(m.peak, outer_peak)

    def module(self, module: nn.Module, name: str) -> None:
        module.register_forward_pre_hook(lambda *_: self.start(name))
        module.register_forward_hook(lambda *_: self.stop(name))

    def method(self, owner, attr: str, name) -> None:
        """Measure `owner.attr(...)` (set on the instance, so the pipeline's own call goes through it);
        `name`: the phase, or a function giving it at each call."""
        original = getattr(owner, attr)

        def measured(*args, **kwargs):
            phase = name() if callable(name) else name
            self.start(phase)
            try:
                return original(*args, **kwargs)
            finally:
                self.stop(phase)

        setattr(owner, attr, measured)


def stand_in_sampling_pipeline(run, models: ProfileModels, dtype: torch.dtype, backbone_only: bool = False):
    """The pipeline the sample stage loads, in `dtype`, its weights made by `run.materialise` (`FakeRun`:
    fake; `RandomWeights`: random on a device); diffusers' own image-to-video pipeline over the bare
    backbone with `backbone_only`."""
    from ingredients.plan.stand_in_trainer import build_stand_in_pipeline

    pipe = build_stand_in_pipeline(run, models)
    if backbone_only:
        bare = run.materialise(build_on_meta(CogVideoXTransformer3DModel, **full_transformer_config(models, True))).eval()
        pipe = CogVideoXImageToVideoPipeline(pipe.tokenizer, pipe.text_encoder, pipe.vae, bare,
                                             CogVideoXDPMScheduler(**dict(pipe.scheduler.config)))
    for part in (pipe.text_encoder, pipe.vae, pipe.transformer):
        part.to(dtype=dtype)  # load_pipeline(folder, torch_dtype)
    return pipe


def prepare_stand_in_video(run, models: ProfileModels, params, num_identities: int, backbone_only: bool = False,
                           hooks: PhaseHooks | None = None, device: torch.device | str = "cpu"):
    """The sample stage's path for one video (module docstring), weights made by `run.materialise`
    (`FakeRun` or `RandomWeights`), on `device`: the pipeline in `params.dtype` after `configure_pipeline`,
    and a function that makes the ID tokens and runs `__call__` (`STEPS` guided steps and the decode).
    `params`: SampleParams. Returns (pipe, video function -> [1, F, 3, H, W])."""
    from ingredients.plan.stand_in_trainer import StandInFaces
    from ingredients.sampling.runtime import DTYPES, configure_pipeline
    from ingredients.sampling.sample import canvas_for, identities_for

    frames = params.num_frames or models.num_frames
    height, width = params.height or models.height, params.width or models.width
    pipe = stand_in_sampling_pipeline(run, models, DTYPES[params.dtype], backbone_only)
    pipe.set_progress_bar_config(disable=True)
    if not backbone_only:
        pipe = configure_pipeline(pipe, params.model_copy(update={"offload": "none", "compile": False}), device)
    elif params.vae_tiling:
        pipe.vae.enable_tiling()
    if hooks is not None:
        hooks.module(pipe.text_encoder, "text")
        hooks.module(pipe.transformer, "denoise")
        hooks.method(pipe, "decode_latents", lambda: "decode_tiled" if pipe.vae.use_tiling else "decode")
        if not backbone_only:
            hooks.method(pipe.transformer, "encode_identities", "identities")
    references = None
    if not backbone_only:
        references = StandInFaces(pipe.transformer.config, models.vit_tokens, height, width)(_photo_paths(num_identities))

    def video() -> torch.Tensor:
        kwargs = {}
        canvas = PIL.Image.new("RGB", (width, height), (255, 255, 255))
        if references is not None:
            kwargs = {"identities": identities_for("ours", pipe, references), "use_router": True}
            canvas = canvas_for("ours", references)
        return pipe(prompt="two people talk in a sunlit kitchen", image=canvas, height=height, width=width,
                    num_frames=frames, num_inference_steps=STEPS, guidance_scale=params.guidance_scale,
                    generator=torch.Generator().manual_seed(0), output_type="pt",
                    max_sequence_length=int(pipe.transformer.config.max_text_seq_length), **kwargs).frames

    return pipe, video


def sample_stand_in_video(run, models: ProfileModels, params, num_identities: int, backbone_only: bool = False,
                          hooks: PhaseHooks | None = None, device: torch.device | str = "cpu"):
    """`prepare_stand_in_video`, then the video: (pipe, video [1, F, 3, H, W])."""
    pipe, video = prepare_stand_in_video(run, models, params, num_identities, backbone_only, hooks, device)
    if hooks is not None:
        hooks.begin()
    return pipe, video()


def measure_sampling(models: ProfileModels, params, num_identities: int, backbone_only: bool = False) -> SampleMeasurement:
    """Run one video fake through the sample stage's path (`sample_stand_in_video`), then the other decode
    (tiled or not) through `decode_latents`; `params`: SampleParams."""
    from ingredients.sampling.runtime import DTYPES

    frames = params.num_frames or models.num_frames
    height, width = params.height or models.height, params.width or models.width
    with FakeRun() as run:
        hooks = PhaseHooks(run)
        pipe, video = sample_stand_in_video(run, models, params, num_identities, backbone_only, hooks)
        latent_frames = (frames - 1) // pipe.vae_scale_factor_temporal + 1
        latents = run.empty(1, latent_frames, pipe.vae.config.latent_channels, height // pipe.vae_scale_factor_spatial,
                            width // pipe.vae_scale_factor_spatial, dtype=DTYPES[params.dtype])
        pipe.vae.disable_tiling() if pipe.vae.use_tiling else pipe.vae.enable_tiling()
        hooks.begin()  # the other decode over the weights and its latents
        with torch.no_grad():
            pipe.decode_latents(latents)
        parts = {"text_encoder": pipe.text_encoder, "transformer": pipe.transformer, "vae": pipe.vae}
        flops = {k: sum(v) for k, v in hooks.flops.items()}
        flops["denoise"] = flops["denoise"] // len(hooks.flops["denoise"])
        return SampleMeasurement(
            parameters={k: sum(q.numel() for q in m.parameters()) for k, m in parts.items()},
            weight_bytes={k: sum(q.numel() * q.element_size() for q in m.parameters()) for k, m in parts.items()},
            largest_module_bytes={k: _largest_module(m) for k, m in parts.items()},
            phase_peak_bytes=dict(hooks.peaks), phase_flops=flops, flops_by_op=hooks.ops["denoise"],
            output_shape=tuple(video.shape),
        )


def _photo_paths(k: int) -> list[str]:
    """K reference photos for the stand-in face stack (written once to a temporary folder)."""
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="plan-photos-"))
    paths = []
    for j in range(k):
        path = folder / f"id{j}.png"
        PIL.Image.fromarray(np.full((64, 64, 3), 40 * j, dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def _largest_module(module: nn.Module) -> int:
    return max((sum(p.numel() * p.element_size() for p in m.parameters(recurse=False)) for m in module.modules()), default=0)


PHASE_COMPONENT = {"text": "text_encoder", "identities": "transformer", "denoise": "transformer", "decode": "vae"}


def sampling_peak_bytes(m: SampleMeasurement, offload: str, vae_tiling: bool) -> tuple[float, str]:
    """Peak device bytes of one video under an offload mode (none | model | sequential), and the phase."""
    decode = "decode_tiled" if vae_tiling else "decode"
    phases = {k: v for k, v in m.phase_peak_bytes.items() if not k.startswith("decode")}
    phases["decode"] = m.phase_peak_bytes[decode]
    best, where = 0.0, ""
    for phase, act in phases.items():
        comp = PHASE_COMPONENT[phase]
        if offload == "none":
            resident = sum(m.weight_bytes.values())
        elif offload == "model":
            resident = m.weight_bytes[comp]
        elif offload == "sequential":
            resident = m.largest_module_bytes[comp]
        else:
            raise ValueError(f"sample offload {offload!r}: none, model or sequential")
        if resident + act > best:
            best, where = resident + act, phase
    return best, where


def video_flops(m: SampleMeasurement, steps: int, vae_tiling: bool) -> int:
    """FLOPs of one video: text, identities, `steps` guided denoising steps, decode."""
    f = m.phase_flops
    return f["text"] + f.get("identities", 0) + steps * f["denoise"] + f["decode_tiled" if vae_tiling else "decode"]
