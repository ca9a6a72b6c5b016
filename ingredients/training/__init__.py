"""Two-stage training of the Ingredients transformer (stage spec as data, accelerate, checkpoints)."""

from ingredients.training.stage_spec import StageSpec, build_stage_spec
from ingredients.training.trainer import RunPaths, Trainer, fit

__all__ = ["RunPaths", "StageSpec", "Trainer", "build_stage_spec", "fit"]
