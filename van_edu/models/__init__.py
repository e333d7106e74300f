"""Model zoo: VAN (B0-B6 and small-image variants), ViT and ResNet baselines, and a registry."""
from .registry import create_model, list_models, model_family, register_model
from . import van  # noqa: F401  (registers the VAN variants)
from .van import VAN, VANConfig

__all__ = ["create_model", "list_models", "model_family", "register_model", "VAN", "VANConfig"]
