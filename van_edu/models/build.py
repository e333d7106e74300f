"""``build_model``: a registered model sized for a data set, as a classifier, a segmenter or a
detector, by the kind of labels the data has. Above the registry and the heads that use it."""
from __future__ import annotations

from torch import nn

from .centernet import create_detector
from .fpn import create_segmenter
from .registry import create_model, model_family

__all__ = ["build_model"]


def build_model(name: str, data, **overrides) -> nn.Module:
    """``create_model(name)`` sized for ``data``: its ``num_classes`` and ``in_chans``, and for a ViT
    (whose position embedding fixes the input size) its ``image_size``. ``data`` is anything with
    those attributes, e.g. the ``ImageData`` of ``van_edu.data.load_image_dataset``. For a
    segmentation split (``data.task == "segmentation"``: a mask per image) the model is a Semantic
    FPN on ``name``'s pyramid (``van_edu.models.fpn.create_segmenter``; ``overrides`` may hold its
    options, such as ``neck_channels`` and ``out_indices``); for a detection split (boxes) a
    CenterNet on it (``van_edu.models.centernet.create_detector``)."""
    kw = dict(overrides)
    if model_family(name) == "vit":
        kw.setdefault("image_size", data.image_size)
    task = getattr(data, "task", "classification")
    if task == "segmentation":
        return create_segmenter(name, data.num_classes, data.in_chans, **kw)
    if task == "detection":
        return create_detector(name, data.num_classes, data.in_chans, **kw)
    return create_model(name, num_classes=data.num_classes, in_chans=data.in_chans, **kw)
