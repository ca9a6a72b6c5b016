"""Train one stage: `python -m ingredients.training.train --params params.yaml --stage stage1
--manifest FILE --init MODEL_DIR --out DIR [--resume CHECKPOINT_DIR|latest|auto] [--val-manifest FILE]`.

Validation runs on `--val-manifest` (clips of held-out videos); without it, on training clips, and
its numbers are then labelled `train_clips`, never held-out (see trainer.py).

Paths come from the command line; every hyperparameter comes from the params file's `train`
section: `train.common` holds shared values and each stage section overrides them (deep merge).
Multi-process: dvc.yaml runs it through `python -m ingredients.launch` (params `launch.train`: one
process, `accelerate launch`, or Ray Train; docs/scaling.md), or by hand `accelerate launch
[--config_file configs/accelerate/<x>.yaml] -m ingredients.training.train ...` (configs/accelerate/README.md).

Params layout (every key optional unless marked; defaults shown):

```yaml
train:
  common:
    seed: 0
    mixed_precision: "no"        # no | bf16 | fp16 | auto (bf16 on a GPU, no on CPU)
    log_mlflow: true             # MLflow store and experiment: the `tracking:` section
    log_every: 1                 # flush train_log.csv every N steps
    grad_accum: 1
    max_grad_norm: 1.0           # null = no clipping
    weight_decay: 1.0e-4
    adam_betas: [0.9, 0.999]
    adam_eps: 1.0e-8
    gradient_checkpointing: false
    ddp_find_unused_parameters: true
    lr_schedule: {name: constant_with_warmup, warmup_steps: 0, num_cycles: 1, power: 1.0}
    ema: {enabled: false, decay: 0.999, update_after_step: 0}
    dropout: {text: 0.0, identity: 0.0}          # classifier-free guidance dropout per sample
    image_noise: {enabled: true, log_mean: -3.0, log_std: 0.5}   # canvas + exp(N(mean, std)) * N(0, 1) before the VAE
    loss: {diffusion_weight: 1.0, face_weight: 0.0}
    data: {num_frames: null, height: null, width: null,   # null = the transformer's sample size
           min_coverage: 0.5, temporal_sampling: uniform, frame_stride: 1,
           shuffle_identities: true,   # random identity order per training sample
           num_workers: 0}
    precompute: {enabled: false, cache_dir: null}          # null = <out>/cache
    checkpoint: {every: 0, keep: 2}                        # every N steps (0 = at the end only)
    validation: {every: 0, num_clips: 2, timesteps: [100, 300, 500, 700, 900],
                 inference_steps: 4, guidance_scale: 1.0, seed: 1234}
  stage1:
    steps: 60                    # required: optimizer steps
    lr: 1.0e-3                   # required
    batch_size: 2                # global batch per micro-step (split across processes)
    init_from: model             # model | <stage name> (then --init must be that stage's out/model)
    train: {projector: true, injectors: true, routers: false,
            patch_embed: false,  # true: patch_embed trains at lr (e.g. after a t2v initialisation)
            backbone: frozen,    # frozen | scaled_lr | lora
            backbone_lr_scale: 0.1, lora_rank: 8, lora_alpha: null}
    identities: {min: 1, max: 1}
    routing: {weight: 0.0, kind: ce}                       # ce | mse
  stage2:
    steps: 60
    lr: 5.0e-4
    batch_size: 2
    init_from: stage1
    train: {projector: true, injectors: true, routers: true, backbone: frozen}
    identities: {min: 2, max: 3}
    routing: {weight: 1.0, kind: ce}
```
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from ingredients.config import load_params, section
from ingredients.mlflow_run import tracking_params
from ingredients.training.stage_spec import build_stage_spec
from ingredients.training.trainer import RunPaths, Trainer

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ingredients.training.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", required=True, help="params YAML with a 'train' section")
    parser.add_argument("--stage", required=True, help="stage section of train (e.g. stage1, stage2)")
    parser.add_argument("--manifest", required=True, help="curated training manifest (JSONL)")
    parser.add_argument("--init", required=True, help="model folder to start from (or the previous stage's out/model)")
    parser.add_argument("--out", required=True, help="output folder (model/, checkpoints/, logs, validation/)")
    parser.add_argument("--resume", default=None,
                        help="checkpoint folder, 'latest' (the newest under OUT/checkpoints) or 'auto' (the newest when "
                             "there is one, else a fresh start: what dvc.yaml passes, so a restarted launch resumes)")
    parser.add_argument("--val-manifest", default=None,
                        help="manifest of held-out clips for validation (default: the training manifest; its numbers "
                             "are then labelled train_clips)")
    parser.add_argument("--data-root", default=None,
                        help="folder the manifests' source videos must lie in (default: the folder above each manifest's)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    params = load_params(args.params)
    spec = build_stage_spec(section(params, "train", args.params), args.stage)
    paths = RunPaths(manifest=Path(args.manifest), init=Path(args.init), out=Path(args.out),
                     val_manifest=Path(args.val_manifest) if args.val_manifest else None, resume=args.resume,
                     data_root=Path(args.data_root) if args.data_root else None, params=Path(args.params))
    Trainer(spec, paths, tracking_params(params, str(args.params))).fit()


if __name__ == "__main__":
    main()
