"""Model classes and loaders."""

from ingredients.models.identity_router import IDRouter, PerceiverCrossAttention, routed_injection, routing_loss, routing_weights
from ingredients.models.projector import MultiScaleProjector
from ingredients.models.reference_format import config_from_reference, from_reference, load_reference_transformer
from ingredients.models.transformer_ingredients import IdentityBatch, IngredientsTransformer3DModel, IngredientsTransformerOutput

__all__ = [
    "IDRouter",
    "IdentityBatch",
    "IngredientsTransformer3DModel",
    "IngredientsTransformerOutput",
    "MultiScaleProjector",
    "PerceiverCrossAttention",
    "config_from_reference",
    "from_reference",
    "load_reference_transformer",
    "routed_injection",
    "routing_loss",
    "routing_weights",
]
