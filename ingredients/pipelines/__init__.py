"""Diffusers pipelines."""

from ingredients.pipelines.pipeline_ingredients import IngredientsPipeline, IngredientsPipelineOutput

__all__ = ["IngredientsPipeline", "IngredientsPipelineOutput"]
