"""Diffusers pipelines."""

from .pipeline_ingredients import IngredientsPipeline, IngredientsPipelineOutput

__all__ = ["IngredientsPipeline", "IngredientsPipelineOutput"]
