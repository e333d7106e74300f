"""Model zoo: VAN (B0-B6 and small-image variants), ViT and ResNet baselines, and a registry.

Every model has ``forward_features(x) -> [B, C, h, w]`` and ``forward_head(features) -> logits``.
``build_model`` sizes a registered model for a data set; ``load_bundled_model`` adds trained weights.
"""
from . import resnet, van, vit  # noqa: F401  (importing registers the factories)
from .attention import GlobalSelfAttention
from .build import build_model
from .bundled import load_bundled_model
from .checkpoint import load_official_checkpoint, pretrained
from .fpn import FPN, FPNHead, SemanticFPN, create_segmenter
from .registry import DEMO_MODELS, create_model, list_models, model_family, register_model
from .resnet import ResNet, ResNetConfig
from .van import VAN, VANConfig
from .vit import ViT, ViTConfig

__all__ = ["create_model", "list_models", "model_family", "register_model", "build_model", "DEMO_MODELS",
           "VAN", "VANConfig", "ViT", "ViTConfig", "ResNet", "ResNetConfig", "GlobalSelfAttention",
           "load_bundled_model", "load_official_checkpoint", "pretrained",
           "FPN", "FPNHead", "SemanticFPN", "create_segmenter"]
