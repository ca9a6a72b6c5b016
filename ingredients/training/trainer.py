"""The trainer: one `fit()` for every stage, driven by a StageSpec (data), run through accelerate.

`fit()` is a list of `prepare_*` steps, then the loop, then the model folder:
accelerator -> models -> trainable parameters -> data -> encoder (+ precompute) -> optimizer and lr
schedule -> EMA -> accelerate.prepare -> resume -> validation clips -> tracking -> train -> save.

Distributed semantics: `batch_size` is the global batch of one micro-step; accelerate splits each
batch across processes (split_batches), DDP averages gradients, and every sample's random draws come
from its own generator keyed by (seed, micro-step, global index), so N processes reproduce one
process's loss curve and a resumed run continues exactly. The image condition gets noise
augmentation per sample when `image_noise.enabled` (encoded per step from the cached clean canvas;
see clip_encoding.py); validation and sampling use the clean canvas.

Validation clips come from `--val-manifest` (held-out clips) or, without one, from the training
manifest, and every validation number says which: the `split` column of val_log.csv, the MLflow
metric prefix (`heldout/val_loss`, `train_clips/routing_acc`, ...), the validation image names and
`validation` in model/training_info.json (manifest, split, clip ids). `heldout` needs a separate
manifest whose chosen clips come from videos the training manifest does not use; anything else is
`train_clips`, with a warning. Outputs under `out/`:
    model/            the final model folder (base components + trained transformer), loadable by
                      ingredients.model_folder.load_pipeline; model/training_info.json describes it
    checkpoints/      step-XXXXXXXX/ folders (see checkpoint.py)
    train_log.csv     one row per optimizer step (DVC plots); val_log.csv one row per validation
    validation/       step-XXXXXXXX_<split>_sample.png (frame strip) and _<split>_routing.png (routing maps)
    cache/            encoded clips when precompute is on (unless precompute.cache_dir is set)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import PIL.Image
import torch
from accelerate import Accelerator
from accelerate.utils import (
    DataLoaderConfiguration,
    DistributedDataParallelKwargs,
    DistributedType,
    GradientAccumulationPlugin,
    set_seed,
)
from diffusers import CogVideoXDPMScheduler
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from torch.utils.data import DataLoader

from ingredients.files.atomic import atomic_dir, remove_stale_temps, write_json
from ingredients.data.dataset import IdentityCountBatchSampler, IngredientsVideoDataset, collate_ingredients
from ingredients.data.manifest import read_manifest
from ingredients.launch_params import PLANNED_PEAK_ENV
from ingredients.model_folder.folder import load_face_conditioner, load_pipeline
from ingredients.mlflow_run import TrackingParams, git_revision, start_run

from ingredients.training import checkpoint as ckpt
from ingredients.training.clip_encoding import CanvasNoise, ClipEncoder
from ingredients.training.encoding_cache import EncodingCache
from ingredients.training.metrics_file import MetricsFile, peak_memory_mb
from ingredients.training.sample_randomness import IMAGE_NOISE_STREAM, sample_generators
from ingredients.training.stage_spec import StageSpec
from ingredients.training.step import StepInputs, build_step_inputs, compute_losses, identity_permutations, permute_identities
from ingredients.training.trainable import add_backbone_lora, cast_frozen_parameters, configure_trainable, load_trainable_state_dict, merge_backbone_lora, trainable_state_dict
from ingredients.files.frames import frame_strip
from ingredients.training.validation import ValidationClip, routing_map_image, sample_clip, validation_metrics

logger = logging.getLogger(__name__)

TRAINING_INFO = "training_info.json"
TRAIN_COLUMNS = ["step", "epoch", "loss", "diffusion_loss", "routing_loss", "lr", "grad_norm", "samples_per_s",
                 "peak_memory_mb", "elapsed_s"]
VAL_COLUMNS = ["step", "split", "val_loss", "val_diffusion_loss", "val_routing_loss", "routing_acc",
               "routing_acc_majority", "routing_acc_chance"]  # validation.ROUTING_BASELINES
# what validation numbers were measured on (val_log.csv `split`, MLflow metric prefix, image names)
HELDOUT = "heldout"
TRAIN_CLIPS = "train_clips"
# keys of the resolved spec a resumed run may change (length, bookkeeping, logging)
RESUME_MAY_DIFFER = {"steps", "checkpoint", "validation", "log_every", "log_mlflow",
                     "data.num_workers", "precompute"}
# components of a model folder that the output copies from the init folder
MODEL_FOLDER_SKIP = {"transformer", "transformer_ema", TRAINING_INFO}


@dataclass
class RunPaths:
    """The paths a run is given (never read from params)."""

    manifest: Path
    init: Path
    out: Path
    val_manifest: Path | None = None  # held-out clips to validate on (None: training clips, labelled so)
    resume: str | None = None
    data_root: Path | None = None  # where manifest videos may live (default: the folder above the manifest's)
    params: Path | None = None  # the params file the run is configured from: its MLflow run nests under its study run

    @property
    def model_dir(self) -> Path:
        return self.out / "model"

    @property
    def checkpoints(self) -> Path:
        return self.out / "checkpoints"

    @property
    def validation_dir(self) -> Path:
        return self.out / "validation"


class Trainer:
    """Train one stage (see the module docstring)."""

    def __init__(self, spec: StageSpec, paths: RunPaths, tracking: TrackingParams | None = None) -> None:
        self.spec = spec
        self.tracking = tracking or TrackingParams()  # the params' `tracking:` section
        self.paths = RunPaths(Path(paths.manifest).resolve(), Path(paths.init).resolve(), Path(paths.out).resolve(),
                              None if paths.val_manifest is None else Path(paths.val_manifest).resolve(), paths.resume,
                              None if paths.data_root is None else Path(paths.data_root).resolve(), paths.params)
        self.step = 0
        self.ema: EMAModel | None = None
        self.resumed_from: Path | None = None
        # the peak the launcher's pre-flight planned for this launch (GiB), logged beside the measured one
        planned = os.environ.get(PLANNED_PEAK_ENV)
        self.planned_peak_gib = float(planned) if planned else None
        # a missing checkpoint fails here, before any work
        self.resume_path = None if paths.resume is None else ckpt.resolve_resume(paths.resume, self.paths.checkpoints)

    # ================================================================== fit
    def fit(self) -> Path:
        """Run the stage; returns the model folder. Resuming a run that already finished (its model
        folder written, the checkpoint at train.<stage>.steps) does nothing and says so."""
        if self.finished_already():
            logger.info("%s is at train.%s.steps=%d and %s is written: the run is finished, nothing to do",
                        self.resume_path, self.spec.stage, self.spec.steps, self.paths.model_dir)
            return self.paths.model_dir
        self.prepare_step()
        self.prepare_resume()
        self.prepare_validation()
        self.park_text_encoder()
        with self.prepare_tracking():
            self.train()
            self.save_model()
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()
        return self.paths.model_dir

    def finished_already(self) -> bool:
        """--resume names a checkpoint at (or past) the last step and the final model folder exists."""
        if self.resume_path is None or not (self.paths.model_dir / TRAINING_INFO).is_file():
            return False
        return json.loads((self.resume_path / "state.json").read_text())["step"] >= self.spec.steps

    def validate_without_training(self) -> dict[str, float] | None:
        """Validation metrics of the --init model without training (val_log.csv and the validation
        images are written under out/); e.g. a trained model folder on another held-out manifest."""
        self.prepare_accelerator()
        self.prepare_models()
        self.prepare_trainable()
        self.prepare_data()
        self.prepare_encoder()
        self.prepare_distributed()
        self.prepare_validation()
        with self.prepare_tracking():
            metrics = self.validate()
        self.accelerator.end_training()
        return metrics

    # ================================================================== prepare
    def prepare_step(self) -> None:
        """Everything a micro-step needs, in order: accelerator, models, trainable set, data, encoder,
        optimizer, EMA, distributed wrapping (the plan's stand-in trainer runs exactly this too)."""
        self.prepare_accelerator()
        self.prepare_models()
        self.prepare_trainable()
        self.prepare_data()
        self.prepare_encoder()
        self.prepare_optimizer()
        self.prepare_ema()
        self.prepare_distributed()

    def prepare_accelerator(self) -> None:
        spec = self.spec
        on_gpu = torch.cuda.is_available()
        mixed = spec.mixed_precision
        if mixed == "auto":
            mixed = "bf16" if on_gpu else "no"
        if mixed == "fp16" and not on_gpu:
            raise ValueError("train.mixed_precision 'fp16' needs a CUDA GPU; use 'no' or 'bf16' on CPU")
        self.accelerator = Accelerator(
            cpu=not on_gpu,
            mixed_precision=mixed,
            gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=spec.grad_accum, sync_with_dataloader=False),
            dataloader_config=DataLoaderConfiguration(split_batches=True),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=spec.ddp_find_unused_parameters)],
            project_dir=str(self.paths.out),
        )
        acc = self.accelerator
        if spec.batch_size % acc.num_processes:
            raise ValueError(
                f"train.{spec.stage}.batch_size={spec.batch_size} (global) must be divisible by the "
                f"{acc.num_processes} processes"
            )
        self.local_batch = spec.batch_size // acc.num_processes
        # FSDP and DeepSpeed shard weights and optimizer states (untested here: no GPU)
        self.sharded = acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
        if acc.state.deepspeed_plugin is not None:
            # our loader uses a batch sampler, so DeepSpeed cannot infer the micro-batch size
            acc.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = self.local_batch
        self.weight_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed, torch.float32)
        set_seed(spec.seed)
        if acc.is_main_process:
            self.paths.out.mkdir(parents=True, exist_ok=True)
            # what a killed run left half-written (checkpoint temps are cleared by resolve_resume)
            remove_stale_temps(self.paths.out, recursive=False)
            remove_stale_temps(self.paths.validation_dir)
            # DVC outputs of the training stages, present even when nothing else lands in them: no
            # validation clip of this stage's identity count (k3_training), no step (stage2_only)
            for folder, what in ((self.paths.validation_dir, "Validation strips and routing maps of this stage, by "
                                  "step. Only this note when no validation ran (no validation clip has this stage's "
                                  "identity count; the stage's log says so)."),
                                 (self.paths.checkpoints, "Checkpoints of this stage, step-NNNNNNNN/ (--resume). Only "
                                  "this note when the stage ran 0 steps.")):
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "README.txt").write_text(what + "\n")
        acc.wait_for_everyone()
        logger.info("stage %s on %s: %d process(es), mixed precision %s, global batch %d x %d accumulation",
                    spec.stage, acc.device, acc.num_processes, mixed, spec.batch_size, spec.grad_accum)

    def prepare_models(self) -> None:
        spec, device = self.spec, self.accelerator.device
        if spec.init_from != "model":
            self._check_init_stage()
        self.pipe = self.load_init_pipeline()
        self.pipe.set_progress_bar_config(disable=True)
        for frozen in (self.pipe.vae, self.pipe.text_encoder):
            frozen.requires_grad_(False)
            frozen.to(device)
            if self.weight_dtype != torch.float32:
                frozen.to(dtype=self.weight_dtype)
        self.transformer = self.pipe.transformer.to(device)
        self.transformer.train()
        if spec.gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        # a separate scheduler instance: validation sampling changes the pipeline scheduler's timesteps
        self.noise_scheduler = CogVideoXDPMScheduler.from_config(self.pipe.scheduler.config)
        if self.noise_scheduler.config.prediction_type != "v_prediction":
            raise ValueError(f"{self.paths.init}/scheduler: prediction_type must be 'v_prediction' for this loss, "
                             f"got {self.noise_scheduler.config.prediction_type!r}")
        cfg = self.transformer.config
        self.patch_size = int(cfg.patch_size)
        self.vae_spatial = int(self.pipe.vae_scale_factor_spatial)
        self.vae_temporal = int(self.pipe.vae_scale_factor_temporal)
        self.height = spec.data.height or int(cfg.sample_height) * self.vae_spatial
        self.width = spec.data.width or int(cfg.sample_width) * self.vae_spatial
        self.num_frames = spec.data.num_frames or int(cfg.sample_frames)
        self.num_latent_frames = (self.num_frames - 1) // self.vae_temporal + 1
        self.image_rotary_emb = (
            self.pipe._prepare_rotary_positional_embeddings(self.height, self.width, self.num_latent_frames, device)
            if cfg.use_rotary_positional_embeddings else None
        )

    def load_init_pipeline(self):
        """The pipeline training starts from: the --init model folder."""
        return load_pipeline(self.paths.init)

    def load_conditioner(self):
        """The face stack of the --init model folder, checked against the transformer's identity widths."""
        return load_face_conditioner(self.paths.init, self.pipe)

    def encoding_cache(self) -> EncodingCache | None:
        """Where precomputed clip encodings live (None when precompute is off)."""
        if not self.spec.precompute.enabled:
            return None
        cache_dir = Path(self.spec.precompute.cache_dir) if self.spec.precompute.cache_dir else self.paths.out / "cache"
        return EncodingCache(cache_dir / "clips")

    def park_text_encoder(self) -> None:
        """With precompute on, every training and validation clip's prompt is encoded by now (the cache and
        the encoder's per-prompt memo hold them): the text encoder (T5-XXL: 9.5 GB in bf16) leaves the
        device for the loop. Validation sampling brings it back for its prompts (`_text_encoder_on_device`).
        The VAE stays: image-noise augmentation encodes the noised canvas every step."""
        self.text_encoder_parked = bool(self.spec.precompute.enabled and self.pipe.text_encoder is not None)
        if self.text_encoder_parked:
            self.pipe.text_encoder.to("cpu")
            logger.info("precompute on: text encoder moved off %s for the training loop", self.accelerator.device)

    @contextlib.contextmanager
    def _text_encoder_on_device(self):
        if not getattr(self, "text_encoder_parked", False):
            yield
            return
        self.pipe.text_encoder.to(self.accelerator.device)
        try:
            yield
        finally:
            self.pipe.text_encoder.to("cpu")

    def _check_init_stage(self) -> None:
        info_path = self.paths.init / TRAINING_INFO
        if not info_path.is_file():
            raise FileNotFoundError(
                f"train.{self.spec.stage}.init_from is {self.spec.init_from!r}, but {self.paths.init} has no "
                f"{TRAINING_INFO}: pass --init <{self.spec.init_from} output>/model"
            )
        got = json.loads(info_path.read_text()).get("stage")
        if got != self.spec.init_from:
            raise ValueError(f"--init {self.paths.init} is the output of stage {got!r}, "
                             f"train.{self.spec.stage}.init_from expects {self.spec.init_from!r}")

    def prepare_trainable(self) -> None:
        train = self.spec.train
        if train.backbone == "lora":
            add_backbone_lora(self.transformer, train.lora_rank, train.lora_alpha)
        self.param_groups = configure_trainable(self.transformer, train, self.spec.lr)
        if self.weight_dtype != torch.float32 and not self.sharded:
            # frozen transformer weights (the backbone when frozen) in the weight dtype: autocast runs
            # them in it anyway, and the 5B backbone is 24 GB in float32 vs 12 GB in bf16; trainable
            # weights stay float32 for the optimizer (FSDP / DeepSpeed cast by their own precision policy)
            cast = cast_frozen_parameters(self.transformer, self.weight_dtype)
            logger.info("%d frozen transformer tensors held in %s", cast, self.weight_dtype)
        self.trainable_params = [p for g in self.param_groups for p in g["params"]]
        # names in the optimizer's (and EMA's) parameter order
        name_of = {id(p): n for n, p in self.transformer.named_parameters()}
        self.trainable_names = [name_of[id(p)] for p in self.trainable_params]

    def prepare_data(self) -> None:
        spec = self.spec
        self.dataset = self._dataset(self.paths.manifest)
        self.sampler = IdentityCountBatchSampler(self.dataset.identity_counts, spec.batch_size, shuffle=True,
                                                 drop_last=True, seed=spec.seed)
        if len(self.sampler) == 0:
            counts = {k: self.dataset.identity_counts.count(k) for k in sorted(set(self.dataset.identity_counts))}
            raise ValueError(
                f"{self.paths.manifest}: no identity-count bucket has batch_size={spec.batch_size} clips "
                f"(clips per identity count: {counts}); lower train.{spec.stage}.batch_size or add clips"
            )
        self.dataloader = DataLoader(self.dataset, batch_sampler=self.sampler, collate_fn=collate_ingredients,
                                     num_workers=spec.data.num_workers)
        logger.info("%d clips (identity counts %d..%s), %d batches per epoch", len(self.dataset),
                    spec.identities.min, spec.identities.max, len(self.sampler))

    def _dataset(self, manifest: Path) -> IngredientsVideoDataset:
        spec = self.spec
        return IngredientsVideoDataset(
            manifest, self.num_frames, self.height, self.width, data_root=self.paths.data_root,
            min_identities=spec.identities.min,
            max_identities=spec.identities.max, vae_spatial=self.vae_spatial, vae_temporal=self.vae_temporal,
            patch_size=self.patch_size, min_coverage=spec.data.min_coverage,
            temporal_sampling=spec.data.temporal_sampling, frame_stride=spec.data.frame_stride, seed=spec.seed,
        )

    def prepare_encoder(self) -> None:
        acc = self.accelerator
        cache = self.encoding_cache()
        conditioner = self.load_conditioner()
        self.encoder = ClipEncoder(self.pipe, conditioner, self.height, self.width, acc.device, self.weight_dtype, cache)
        self.empty_prompt = self.encoder.prompt_embeds([""])[0]  # [T, D]
        if cache is not None:
            mine = range(acc.process_index, len(self.dataset), acc.num_processes)
            for i in mine:
                item = self.dataset[i]
                self.encoder.encode(item["frames"], item["prompt"], item["reference_paths"])
            acc.wait_for_everyone()
            logger.info("precompute: %d clips encoded, %d already cached (%s)", cache.misses, cache.hits, cache.folder)

    def prepare_optimizer(self) -> None:
        spec = self.spec
        self.optimizer = torch.optim.AdamW(
            [{"params": g["params"], "lr": g["lr"]} for g in self.param_groups],
            lr=spec.lr, betas=tuple(spec.adam_betas), eps=spec.adam_eps, weight_decay=spec.weight_decay,
        )
        self.lr_scheduler = get_scheduler(
            spec.lr_schedule.name, self.optimizer, num_warmup_steps=spec.lr_schedule.warmup_steps,
            num_training_steps=spec.steps, num_cycles=spec.lr_schedule.num_cycles, power=spec.lr_schedule.power,
        )

    def prepare_ema(self) -> None:
        if self.spec.ema.enabled and self.sharded:
            raise ValueError(f"train.{self.spec.stage}.ema.enabled: EMA is not supported with FSDP/DeepSpeed "
                             f"(sharded weights); disable it or use DDP")
        if self.spec.ema.enabled:
            self.ema = EMAModel(self.trainable_params, decay=self.spec.ema.decay,
                                update_after_step=self.spec.ema.update_after_step)

    def prepare_distributed(self) -> None:
        if not hasattr(self, "optimizer"):  # evaluation only
            self.model, self.dataloader = self.accelerator.prepare(self.transformer, self.dataloader)
            return
        self.model, self.optimizer, self.dataloader, self.lr_scheduler = self.accelerator.prepare(
            self.transformer, self.optimizer, self.dataloader, self.lr_scheduler
        )

    def prepare_resume(self) -> None:
        if self.resume_path is None:
            return
        path = self.resume_path
        loaded = ckpt.load_checkpoint(path)
        diffs = ckpt.params_differences(loaded.state["params"], self.spec.resolved(), RESUME_MAY_DIFFER)
        if diffs:
            raise ValueError(f"cannot resume from {path}: the params differ from the checkpoint's:\n  " + "\n  ".join(diffs))
        if loaded.step >= self.spec.steps:
            raise ValueError(f"{path} is at step {loaded.step}, train.{self.spec.stage}.steps is {self.spec.steps}: nothing to do")
        if self.sharded:
            raise NotImplementedError("resuming FSDP/DeepSpeed runs is not implemented (the checkpoint holds "
                                      "gathered weights and per-rank optimizer shards); resume with DDP")
        load_trainable_state_dict(self.accelerator.unwrap_model(self.model), loaded.trainable, str(path))
        self.optimizer.load_state_dict(loaded.optimizer)
        self.lr_scheduler.load_state_dict(loaded.lr_scheduler)
        if self.ema is not None:
            if loaded.ema is None:
                raise ValueError(f"{path} has no ema.safetensors but train.{self.spec.stage}.ema.enabled is true")
            self.ema.load_state_dict({**loaded.state["ema"], "shadow_params": [
                loaded.ema[n].to(self.accelerator.device) for n in self.trainable_names]})
        ckpt.restore_rng_state(*ckpt.read_rng_state(path, self.accelerator.process_index))
        self.step = loaded.step
        self.resumed_from = path
        logger.info("resumed from %s at step %d", path, self.step)

    def prepare_validation(self) -> None:
        """The first validation.num_clips clips of the stage's identity range, and what they are
        (`self.val_info`: manifest, split, clip ids; see the module docstring)."""
        spec, acc = self.spec, self.accelerator
        given = self.paths.val_manifest
        manifest = given or self.paths.manifest
        self.val_clips: list[ValidationClip] = []
        split, reason = HELDOUT, None
        if given is None or given == self.paths.manifest:
            dataset = self.dataset
            split, reason = TRAIN_CLIPS, ("no --val-manifest given" if given is None else "--val-manifest is the training manifest")
        else:
            dataset = self._validation_dataset(manifest)
        chosen = range(min(spec.validation.num_clips, len(dataset))) if dataset is not None else range(0)
        if split == HELDOUT and dataset is not None:
            train_videos = {_clip_video(self.dataset, i) for i in range(len(self.dataset))}
            shared = sorted({_clip_video(dataset, i) for i in chosen} & train_videos)
            if shared:
                split, reason = TRAIN_CLIPS, f"validation clips come from training videos ({', '.join(p.name for p in shared)})"
        self.val_info = {"manifest": str(manifest), "split": split,
                         "clips": [dataset.clips[i].clip_id for i in chosen] if dataset is not None else []}
        if acc.is_main_process and split == TRAIN_CLIPS:
            logger.warning("validation runs on training clips (%s): its numbers are labelled %r, not held-out; pass "
                           "--val-manifest with clips of held-out videos (e.g. data/curated_heldout/manifest.jsonl)",
                           reason, TRAIN_CLIPS)
        if not acc.is_main_process:
            return
        self.val_log = MetricsFile(self.paths.out / "val_log.csv", VAL_COLUMNS
                                   + [f"routing_acc/{n}" for n in range(len(self.transformer.router))]
                                   + [f"routing_acc_t{t}" for t in spec.validation.timesteps])
        self.val_log.resume(self.step)
        if dataset is None:
            self.val_log.flush()  # a DVC output of the stage: its header alone says no validation ran
            return
        for i in chosen:
            item = dataset[i]
            self.val_clips.append(ValidationClip(
                clip_id=item["clip_id"], frames=item["frames"], index_mask=item["index_mask"], prompt=item["prompt"],
                reference_paths=item["reference_paths"],
                encoded=self.encoder.encode(item["frames"], item["prompt"], item["reference_paths"]),
            ))

    def _validation_dataset(self, manifest: Path) -> IngredientsVideoDataset | None:
        """The held-out manifest's clips in the stage's identity range; None (warned) when it has none."""
        ids = self.spec.identities
        counts = sorted({c.num_identities for c in read_manifest(manifest, self.paths.data_root)})
        if not any(ids.min <= k and (ids.max is None or k <= ids.max) for k in counts):
            if self.accelerator.is_main_process:
                logger.warning("%s has no clip with %d..%s identities (identity counts present: %s): no validation "
                               "metrics for train.%s", manifest, ids.min, ids.max, counts, self.spec.stage)
            return None
        return self._dataset(manifest)

    @contextlib.contextmanager
    def prepare_tracking(self):
        """Main process: the plots file and (optionally) an MLflow run for the whole loop."""
        self.train_log = MetricsFile(self.paths.out / "train_log.csv", TRAIN_COLUMNS)
        self.mlflow = None
        if not self.accelerator.is_main_process:
            yield
            return
        self.train_log.resume(self.step)
        if not self.spec.log_mlflow:
            yield
            return
        import mlflow

        tags = {"resumed_from": str(self.resumed_from)} if self.resumed_from else None
        t = self.tracking
        with start_run(self.spec.stage, self.spec.resolved(), t.uri, t.experiment, tags=tags, fallback_to_local=t.fallback_to_local,
                       params_file=self.paths.params):
            mlflow.log_params({"paths.manifest": str(self.paths.manifest), "paths.init": str(self.paths.init),
                               "paths.val_manifest": self.val_info["manifest"],
                               "num_processes": self.accelerator.num_processes})
            if self.planned_peak_gib is not None:  # the launcher's pre-flight (ingredients/preflight.py)
                mlflow.log_param("planned_peak_gib", self.planned_peak_gib)
            mlflow.set_tag("validation_split", self.val_info["split"])
            self.mlflow = mlflow
            yield

    # ================================================================== loop
    def train(self) -> None:
        spec, acc = self.spec, self.accelerator
        if self.step == 0:
            self.validate()
        self.model.train()
        micro = self.step * spec.grad_accum
        per_epoch = len(self.dataloader)
        window = {"loss": [], "diffusion_loss": [], "routing_loss": []}
        t0 = time.perf_counter()
        start = time.perf_counter()
        while self.step < spec.steps:
            epoch, skip = divmod(micro, per_epoch)
            self.sampler.set_epoch(epoch)
            self.dataloader.set_epoch(epoch)
            loader = acc.skip_first_batches(self.dataloader, skip) if skip else self.dataloader
            for batch in loader:
                losses, grad_norm = self.micro_step(batch, micro)
                micro += 1
                window["loss"].append(losses.total.detach())
                window["diffusion_loss"].append(losses.diffusion.detach())
                if losses.routing is not None:
                    window["routing_loss"].append(losses.routing.detach())
                if not acc.sync_gradients:
                    continue
                self.step += 1
                now = time.perf_counter()
                self.log_step(epoch, window, grad_norm, now - t0, now - start)
                window = {k: [] for k in window}
                t0 = now
                if spec.checkpoint.every and self.step % spec.checkpoint.every == 0 and self.step < spec.steps:
                    self.save_checkpoint()
                if spec.validation.every and self.step % spec.validation.every == 0 and self.step < spec.steps:
                    self.validate()
                if self.step >= spec.steps:
                    break
        if self.step > 0:  # steps: 0 passes the init model through (validated once, no checkpoint)
            self.save_checkpoint()
            self.validate()
        if acc.is_main_process:
            self.train_log.flush()

    def micro_step(self, batch: dict, micro: int):
        """One micro-step of the loop: losses, accelerate's backward and, when the gradients sync (the
        last micro-step of an accumulation), clipping, the optimizer and lr schedule step and the EMA
        update. Returns the losses and the gradient norm (None between syncs)."""
        acc = self.accelerator
        with acc.accumulate(self.model):
            losses = self.training_step(batch, micro)
            acc.backward(losses.total)
            grad_norm = None
            if acc.sync_gradients:
                grad_norm = self._clip_gradients()
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        if acc.sync_gradients and self.ema is not None:
            self.ema.step(self.trainable_params)
        return losses, grad_norm

    def training_step(self, batch: dict, micro: int):
        spec = self.spec
        return compute_losses(self.model, self.step_inputs(batch, micro), self.noise_scheduler, self.image_rotary_emb,
                              self.patch_size, spec.loss, spec.routing)

    def step_inputs(self, batch: dict, micro: int) -> StepInputs:
        """This process's share of a global batch -> model inputs: identity order, encodings (the
        canvas noise-augmented when image_noise is on), then the step's draws (see step.py)."""
        spec, acc = self.spec, self.accelerator
        first = acc.process_index * self.local_batch
        indices = range(first, first + len(batch["prompt"]))
        if spec.data.shuffle_identities and batch["num_identities"] > 1:
            batch = permute_identities(batch, identity_permutations(spec.seed, micro, indices, batch["num_identities"]))
        noise, canvas_noise = spec.image_noise, None
        if noise.enabled:
            canvas_noise = [CanvasNoise(g, noise.log_mean, noise.log_std)
                            for g in sample_generators(spec.seed, micro, indices, IMAGE_NOISE_STREAM)]
        encoded = self.encoder.encode_batch(batch, canvas_noise)
        return build_step_inputs(
            encoded, batch["index_mask"], sample_generators(spec.seed, micro, indices), self.noise_scheduler,
            self.pipe.vae_scaling_factor_image, self.empty_prompt, spec.dropout.text, spec.dropout.identity,
            invert_scale_latents=bool(self.pipe.vae.config.invert_scale_latents), device=acc.device,
        )

    def _clip_gradients(self) -> torch.Tensor:
        if self.spec.max_grad_norm is not None:
            return self.accelerator.clip_grad_norm_(self.trainable_params, self.spec.max_grad_norm)
        grads = [p.grad.detach().float().norm() for p in self.trainable_params if p.grad is not None]
        return torch.stack(grads).norm() if grads else torch.zeros((), device=self.accelerator.device)

    def log_step(self, epoch: int, window: dict, grad_norm, step_time: float, elapsed: float) -> None:
        acc = self.accelerator
        # every process joins the reductions; only the main process writes
        values = {}
        for name, items in window.items():
            has = torch.tensor(1.0 if items else 0.0, device=acc.device)
            if bool(acc.reduce(has, "sum") > 0):
                local = torch.stack(items).float().mean() if items else torch.zeros((), device=acc.device)
                values[name] = float(acc.reduce(local, "mean"))
        if not acc.is_main_process:
            return
        row = {
            "step": self.step, "epoch": epoch, "loss": values.get("loss"), "diffusion_loss": values.get("diffusion_loss"),
            "routing_loss": values.get("routing_loss"), "lr": float(self.lr_scheduler.get_last_lr()[0]),
            "grad_norm": None if grad_norm is None else float(grad_norm),
            "samples_per_s": self.spec.batch_size * self.spec.grad_accum / max(step_time, 1e-9),
            "peak_memory_mb": peak_memory_mb(acc.device), "elapsed_s": elapsed,
        }
        self.train_log.append(row)
        if self.mlflow is not None:
            metrics = {k: v for k, v in row.items() if k != "step" and v is not None and math.isfinite(v)}
            if self.planned_peak_gib is not None:  # the pre-flight's planned peak beside the measured one
                metrics["planned_peak_memory_mb"] = self.planned_peak_gib * 1024
            self.mlflow.log_metrics(metrics, step=self.step)
        if self.step % self.spec.log_every == 0:
            self.train_log.flush()
        logger.info("step %d/%d loss %.4f (diffusion %.4f, routing %s) lr %.2e", self.step, self.spec.steps,
                    row["loss"], row["diffusion_loss"],
                    "-" if row["routing_loss"] is None else f"{row['routing_loss']:.4f}", row["lr"])

    # ================================================================== validation
    def validate(self) -> dict[str, float] | None:
        """Main process: metrics + images for the current weights; others wait."""
        acc, spec = self.accelerator, self.spec
        result = None
        if acc.is_main_process and self.val_clips:
            model = acc.unwrap_model(self.model)
            v = spec.validation
            res = validation_metrics(
                model, self.val_clips, self.noise_scheduler, self.image_rotary_emb, self.patch_size,
                self.pipe.vae_scaling_factor_image, self.empty_prompt, v.timesteps, v.seed, spec.loss, spec.routing,
                bool(self.pipe.vae.config.invert_scale_latents), acc.device, acc.autocast,
            )
            result = res.metrics
            split = self.val_info["split"]
            self.val_log.append({"step": self.step, "split": split, **result})
            self.val_log.flush()
            if self.mlflow is not None:
                self.mlflow.log_metrics({f"{split}/{k}": x for k, x in result.items()}, step=self.step)
            self._validation_images(res)
            logger.info("validation on %s clips at step %d: %s", split, self.step,
                        {k: round(x, 4) for k, x in result.items()})
        acc.wait_for_everyone()
        return result

    def _validation_images(self, res) -> None:
        v, clip = self.spec.validation, res.map_clip
        folder = self.paths.validation_dir
        stem = f"step-{self.step:08d}_{self.val_info['split']}"
        written = []
        if res.routing_argmax is not None and clip.num_identities > 1:
            image = routing_map_image(clip.frames, res.routing_argmax, clip.index_mask, self.vae_spatial,
                                      self.vae_temporal, self.patch_size)
            written.append(self._save_png(image, folder / f"{stem}_routing.png"))
        if v.inference_steps > 0:
            canvas = self.encoder.references(clip.reference_paths).canvas
            with self._text_encoder_on_device(), self.accelerator.autocast():
                video = sample_clip(self.pipe, clip, canvas, v.inference_steps, v.guidance_scale, v.seed,
                                    self.height, self.width, self.num_frames)
            written.append(self._save_png(PIL.Image.fromarray(frame_strip(video)), folder / f"{stem}_sample.png"))
        if self.mlflow is not None:
            for path in written:
                self.mlflow.log_artifact(str(path), artifact_path="validation")

    @staticmethod
    def _save_png(image, path: Path) -> Path:
        from ingredients.files.atomic import atomic_path

        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG")
        return path

    # ================================================================== checkpoints
    def save_checkpoint(self) -> Path | None:
        acc, spec = self.accelerator, self.spec
        root = self.paths.checkpoints
        temp = ckpt.temp_checkpoint_dir(root, self.step)
        final = root / ckpt.checkpoint_name(self.step)
        acc.wait_for_everyone()
        if acc.is_main_process:
            shutil.rmtree(temp, ignore_errors=True)
            temp.mkdir(parents=True)
        acc.wait_for_everyone()
        ckpt.write_rng_state(temp, acc.process_index)
        if self.sharded:  # every rank holds its own optimizer shard
            ckpt.write_optimizer_shard(temp, acc.process_index, self.optimizer.state_dict())
        trainable = self._gathered_trainable()  # a collective when sharded
        acc.wait_for_everyone()
        if acc.is_main_process:
            ema_shadow, ema_state = None, None
            if self.ema is not None:
                ema_shadow = {n: s.detach().cpu().contiguous() for n, s in zip(self.trainable_names, self.ema.shadow_params)}
                ema_state = {k: v for k, v in self.ema.state_dict().items() if k != "shadow_params"}
            state = {
                "step": self.step, "micro_step": self.step * spec.grad_accum, "stage": spec.stage,
                "params": spec.resolved(), "git_revision": code_revision(), "init": str(self.paths.init),
                "manifest": str(self.paths.manifest), "validation": self.val_info, "num_processes": acc.num_processes,
                "ema": ema_state,
            }
            ckpt.write_checkpoint_files(temp, trainable, None if self.sharded else self.optimizer.state_dict(),
                                        self.lr_scheduler.state_dict(), state, ema_shadow)
            ckpt.move_into_place(temp, final)
            ckpt.prune_checkpoints(root, spec.checkpoint.keep)
            self.train_log.flush()
            logger.info("checkpoint %s", final)
        acc.wait_for_everyone()
        return final

    def _gathered_trainable(self) -> dict[str, torch.Tensor] | None:
        """The full trainable weights on the main process (None elsewhere); gathered from the shards
        under FSDP/DeepSpeed, so every process must call it."""
        acc = self.accelerator
        if self.sharded:
            full = acc.get_state_dict(self.model)
            return {n: full[n].detach().cpu().contiguous() for n in self.trainable_names} if acc.is_main_process else None
        return trainable_state_dict(acc.unwrap_model(self.model)) if acc.is_main_process else None

    # ================================================================== output
    def save_model(self) -> None:
        """Main process: base folder components + the trained transformer (EMA weights when on, LoRA
        merged) as `out/model`, written in a temp folder and renamed."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if self.sharded:
            full = acc.get_state_dict(self.model)  # gathered on the main process (a collective)
            if not acc.is_main_process:
                return
            model = load_pipeline(self.paths.init).transformer  # a plain copy to hold the gathered weights
            if self.spec.train.backbone == "lora":
                add_backbone_lora(model, self.spec.train.lora_rank, self.spec.train.lora_alpha)
            model.load_state_dict(full)
        else:
            if not acc.is_main_process:
                return
            model = acc.unwrap_model(self.model)
            if self.ema is not None:
                self.ema.copy_to(self.trainable_params)
        merge_backbone_lora(model)
        final = self.paths.model_dir
        with atomic_dir(final) as temp:
            for child in sorted(self.paths.init.iterdir()):
                if child.name in MODEL_FOLDER_SKIP or child.name.startswith("."):
                    continue
                if child.is_dir():
                    shutil.copytree(child, temp / child.name)
                else:
                    shutil.copy2(child, temp / child.name)
            model.save_pretrained(temp / "transformer", safe_serialization=True)
            write_json(temp / TRAINING_INFO, {
                "stage": self.spec.stage, "step": self.step, "init": str(self.paths.init),
                "manifest": str(self.paths.manifest), "validation": self.val_info, "params": self.spec.resolved(),
                "git_revision": code_revision(), "ema": self.ema is not None, "num_processes": acc.num_processes,
            })
        logger.info("model folder written to %s", final)
        if self.mlflow is not None:
            self.mlflow.log_artifact(str(self.paths.out / "train_log.csv"))


def _clip_video(dataset: IngredientsVideoDataset, i: int) -> Path:
    return (dataset.root / dataset.clips[i].video).resolve()


def code_revision() -> str:
    """The git revision of the code being run (not of the working directory)."""
    return git_revision(cwd=Path(__file__).resolve().parent)


def fit(spec: StageSpec, paths: RunPaths, tracking: TrackingParams | None = None) -> Path:
    """Train one stage; returns the model folder."""
    return Trainer(spec, paths, tracking).fit()

