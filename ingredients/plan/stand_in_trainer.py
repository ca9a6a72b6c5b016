"""The trainer's own micro-step with stand-ins for what it loads: what the plan measures with fake
weights, the suite runs at full size, and the device check runs with random weights on a real device.

`StandInTrainer` is `ingredients.training.Trainer` with three things it loads replaced and nothing it
runs: the --init model folder by the profile's modules built on the meta device and materialised by
`run` (`FakeRun`: fake tensors; `RandomWeights`: random values on a device), the face stack by
`StandInFaces` (the identity features' shapes; the face stack is not part of the step), the on-disk
encoding cache by one in memory. Its data is real: `write_planning_clips` writes a clip per sample (a
noise video at 1/8 of the training size, K reference photos, a box per identity and frame) and the
trainer's own dataset, sampler, collate function and accelerate's data loader read it back at the
training size. Then `prepare_*` and `micro_step` run as in `fit()`: identity shuffle, canvas noise and
its VAE encode, `build_step_inputs`, `compute_losses` under accelerate's autocast, accelerate's
backward, gradient clipping, AdamW, the lr schedule, EMA when on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler
from transformers import AutoTokenizer

from ingredients.data.manifest import ManifestClip, ManifestIdentity, write_manifest
from ingredients.faces.reference import FaceSettings, ReferenceConditioning, make_canvas
from ingredients.files.video_io import write_video
from ingredients.model_folder.tiny import SCHEDULER_CONFIG, text_encoder_folder
from ingredients.models import IngredientsTransformer3DModel
from ingredients.pipelines import IngredientsPipeline
from ingredients.plan.fake_run import build_on_meta
from ingredients.plan.model_configs import ProfileModels, build_text_encoder, full_transformer_config, input_vit_scales
from ingredients.training.encoding_cache import EncodingCache
from ingredients.training.stage_spec import StageSpec
from ingredients.training.trainer import TRAINING_INFO, RunPaths, Trainer

PLANNING_CAPTION = "two people talk in a sunlit kitchen, the camera slowly pans to the left"
SOURCE_SCALE = 8  # the planning video is written at 1/8 of the training size and scaled up by the dataset


def write_planning_clips(folder: Path, count: int, identities: int, num_frames: int, height: int, width: int) -> Path:
    """`count` clips of `identities` identities under `folder` (curated/manifest.jsonl, raw/plan.mp4,
    curated/refs/); returns the manifest. Each identity has a box in every frame, side by side."""
    h0, w0 = max(2 * (height // SOURCE_SCALE // 2), 16), max(2 * (width // SOURCE_SCALE // 2), 16)
    video = folder / "raw" / "plan.mp4"
    rng = np.random.default_rng(0)
    write_video(video, rng.integers(0, 256, (num_frames, h0, w0, 3), dtype=np.uint8), fps=8.0)
    curated = folder / "curated"
    (curated / "refs").mkdir(parents=True, exist_ok=True)
    people = []
    for j in range(identities):
        ref = curated / "refs" / f"id{j}.png"
        PIL.Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(ref)
        x0 = w0 * j / identities
        box = [x0, 0.1 * h0, x0 + w0 / identities, 0.9 * h0]
        people.append(ManifestIdentity(cluster=j, reference=f"refs/id{j}.png", reference_frame=0,
                                       reference_outside_clip=False, boxes=[box] * num_frames))
    clips = [ManifestClip(clip_id=f"plan-{i}", video="../raw/plan.mp4", start_frame=0, end_frame=num_frames, fps=8.0,
                          width=w0, height=h0, caption=PLANNING_CAPTION, mask_kind="box", identities=people)
             for i in range(count)]
    return write_manifest(curated / "manifest.jsonl", clips)


class StandInFaces:
    """The face stack's outputs in shape and dtype (zeros; the canvas from the photos' crops): the step
    sees K identity vectors [K, id_embed_dim] and the ViT scales [K, tokens, vit_dim] the real stack gives."""

    def __init__(self, transformer, vit_tokens: int, height: int, width: int) -> None:
        transformer = dict(transformer)  # the transformer's config
        self.settings = FaceSettings(canvas_width=width, canvas_height=height, crop_size=64)
        self.id_embed_dim, self.vit_dim = int(transformer["id_embed_dim"]), int(transformer["vit_dim"])
        self.scales, self.vit_tokens = input_vit_scales(transformer), vit_tokens
        self.identity = {"stand_in": "planning", "id_embed_dim": self.id_embed_dim, "vit_dim": self.vit_dim}

    def __call__(self, paths: Sequence[str]) -> ReferenceConditioning:
        k = len(paths)
        crops = np.stack([np.asarray(PIL.Image.open(p).convert("RGB").resize((64, 64))) for p in paths])
        s = self.settings
        return ReferenceConditioning(
            crops=crops, id_cond=torch.zeros(k, self.id_embed_dim),
            id_vit_hidden=[torch.zeros(k, self.vit_tokens, self.vit_dim) for _ in range(self.scales)],
            canvas=make_canvas(crops, s.canvas_width, s.canvas_height, s.canvas_layout), faces=[None] * k,
            paths=list(paths), warnings=[], cache_key="stand-in")


class MemoryEncodingCache(EncodingCache):
    """The encoding cache held in memory (its entries are fake tensors)."""

    def __init__(self) -> None:
        super().__init__(Path("memory"))
        self.entries: dict[str, Any] = {}

    def get(self, key: str):
        clip = self.entries.get(key)
        self.hits += clip is not None
        self.misses += clip is None
        return clip

    def put(self, key: str, clip) -> Path:
        self.entries[key] = clip
        return self.path(key)


class RandomWeights:
    """Materialises meta modules on `device` with random values (normal, std 0.02): real tensors of the
    planned shapes, for measuring on a device what the plan predicts."""

    def __init__(self, device: torch.device | str, seed: int = 0) -> None:
        self.device = torch.device(device)
        self.generator = torch.Generator(self.device).manual_seed(seed)

    @torch.no_grad()
    def materialise(self, module: torch.nn.Module) -> torch.nn.Module:
        module.to_empty(device=self.device)
        for t in (*module.parameters(), *module.buffers()):
            if t.is_floating_point():
                t.normal_(0.0, 0.02, generator=self.generator)
            else:
                t.zero_()
        return module


def build_stand_in_pipeline(run, models: ProfileModels) -> IngredientsPipeline:
    """The profile's pipeline in float32 (the trainer and the sampler cast it), its weights made by
    `run.materialise` (`FakeRun` or `RandomWeights`)."""
    parts = {"text_encoder": build_text_encoder(models),
             "vae": build_on_meta(AutoencoderKLCogVideoX, **models.vae),
             "transformer": build_on_meta(IngredientsTransformer3DModel, **full_transformer_config(models, False))}
    for part in parts.values():
        run.materialise(part).eval()
    # the backbone's tokenizer when its folder is there; else the packaged one (T5's vocabulary is larger):
    # the token ids' shape (padded to max_text_seq_length) is all a fake text encoder sees
    tokenizer = AutoTokenizer.from_pretrained(models.tokenizer or text_encoder_folder())
    return IngredientsPipeline(tokenizer, parts["text_encoder"], parts["vae"], parts["transformer"],
                               CogVideoXDPMScheduler(**SCHEDULER_CONFIG))


class StandInTrainer(Trainer):
    """The trainer with stand-in weights, faces and encoding cache (module docstring)."""

    def __init__(self, spec: StageSpec, models: ProfileModels, run, workdir: Path, identities: int) -> None:
        """`run`: what materialises the weights (`FakeRun` or `RandomWeights`)."""
        self.models, self.run = models, run
        frames, height, width = (spec.data.num_frames or models.num_frames, spec.data.height or models.height,
                                 spec.data.width or models.width)
        manifest = write_planning_clips(Path(workdir) / "data", spec.batch_size, identities, frames, height, width)
        init = Path(workdir) / "init"
        init.mkdir(parents=True, exist_ok=True)
        if spec.init_from != "model":  # the trainer checks which stage its --init came from
            (init / TRAINING_INFO).write_text(json.dumps({"stage": spec.init_from}))
        super().__init__(spec, RunPaths(manifest, init, Path(workdir) / "out"))

    def prepare_accelerator(self) -> None:
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)  # each fake trainer sets its own precision
        super().prepare_accelerator()

    def load_init_pipeline(self) -> IngredientsPipeline:
        return build_stand_in_pipeline(self.run, self.models)

    def load_conditioner(self) -> StandInFaces:
        return StandInFaces(self.pipe.transformer.config, self.models.vit_tokens, self.height, self.width)

    def encoding_cache(self) -> MemoryEncodingCache | None:
        return MemoryEncodingCache() if self.spec.precompute.enabled else None

    def prepare_loop(self) -> None:
        """What `fit()` prepares before its loop (validation clips and tracking aside)."""
        self.prepare_step()
        self.park_text_encoder()

    def first_batch(self) -> dict:
        """The data loader's first batch (accelerate's loader: on the device)."""
        self.sampler.set_epoch(0)
        self.dataloader.set_epoch(0)
        return next(iter(self.dataloader))
