"""Two-stage training of the Ingredients transformer (stage spec as data, accelerate, checkpoints)."""

from .stage_spec import StageSpec, build_stage_spec
from .trainer import RunPaths, Trainer, fit

__all__ = ["RunPaths", "StageSpec", "Trainer", "build_stage_spec", "fit"]
