"""Model zoo: VAN (B0-B6 and small-image variants), ViT and ResNet baselines, and a registry.

Every model has ``forward_features(x) -> [B, C, h, w]`` and ``forward_head(features) -> logits``.
"""
from .registry import create_model, list_models, model_family, register_model
from . import van, vit, resnet  # noqa: F401  (importing registers the factories)
from .van import VAN, VANConfig
from .vit import ViT, ViTConfig
from .resnet import ResNet, ResNetConfig
from .checkpoint import load_official_checkpoint, pretrained

__all__ = ["create_model", "list_models", "model_family", "register_model", "VAN", "VANConfig",
           "ViT", "ViTConfig", "ResNet", "ResNetConfig", "load_official_checkpoint", "pretrained"]
