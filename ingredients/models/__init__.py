"""Model classes and loaders."""

from .identity_router import IDRouter, PerceiverCrossAttention, routed_injection, routing_loss, routing_weights
from .projector import MultiScaleProjector
from .reference_format import config_from_reference, from_reference, load_reference_transformer
from .transformer_ingredients import IdentityBatch, IngredientsTransformer3DModel, IngredientsTransformerOutput

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
