"""A small registry: every architecture registers named factory functions, one per variant.

``create_model("van_b0", num_classes=10)`` builds a model by name; ``list_models()`` lists the
names (``van_edu.models.build`` sizes one for a data set). Each variant is a factory function of its own (``van_b0`` in ``models/van.py``, ...), which
takes ``num_classes`` (0: no head), ``in_chans`` and keyword overrides of its config.
``DEMO_MODELS`` names the three models of the course's CPU comparison.
"""
from __future__ import annotations

from dataclasses import fields, replace
from typing import Callable

from torch import nn

from ..errors import VanEduError

# The CPU demo's comparison (``van-edu compare``, ``van-edu bench``): one model per family, of
# about the same size, all with stride-2 stems for 28 px images.
DEMO_MODELS = ("van_mini", "vit_mini", "resnet_mini")

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_FAMILY: dict[str, str] = {}


def register_model(family: str):
    """Decorator: register a factory under its function name, in a family ("van", "vit", "resnet")."""

    def wrap(fn):
        _REGISTRY[fn.__name__] = fn
        _FAMILY[fn.__name__] = family
        return fn

    return wrap


def register_variant(family: str, configs: dict, config):
    """Decorator: register a factory under its function name, in ``family``, and record its
    ``config`` in ``configs`` (the family's configs by name, e.g. ``VAN_CONFIGS``), where the
    factory reads it when called."""

    def wrap(fn):
        configs[fn.__name__] = config
        return register_model(family)(fn)

    return wrap


def configure(base, num_classes: int, in_chans: int, overrides: dict):
    """``base`` (a variant's config dataclass) with ``num_classes``, ``in_chans`` and ``overrides``
    replaced; an unknown option is an error that lists the known ones."""
    try:
        return replace(base, num_classes=num_classes, in_chans=in_chans, **overrides)
    except TypeError as err:
        options = ", ".join(f.name for f in fields(base) if f.name not in ("num_classes", "in_chans"))
        family = type(base).__name__.removesuffix("Config").lower()
        raise VanEduError(f"unknown {family} option in {sorted(overrides)}; options are: {options}") from err


def list_models(family: str | None = None) -> list[str]:
    """Names accepted by ``create_model``, optionally only those of one family."""
    return sorted(n for n in _REGISTRY if family is None or _FAMILY[n] == family)


def model_family(name: str) -> str:
    """"van", "vit" or "resnet" for a registered name."""
    _check_name(name)
    return _FAMILY[name]


def _check_name(name) -> None:
    if name not in _REGISTRY:
        raise VanEduError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")


def create_model(name: str, num_classes: int = 1000, in_chans: int = 3, *, features_only: bool = False,
                 out_indices=None, **overrides) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: one of ``list_models()``, e.g. ``"van_b0"`` or ``"van_mini"``.
        num_classes: size of the classification head; 0 builds none (``forward`` then returns the
            pooled features, as in timm).
        in_chans: channels of the input images (1 for Fashion-MNIST, 3 for RGB).
        features_only: a backbone instead of a classifier, as timm's ``features_only``: no head,
            and ``forward`` returns a list of feature maps described by ``model.feature_info``
            (``num_chs``, ``reduction``): VAN's stages after their norms, ResNet's stages, the
            ViT's simple feature pyramid. ``num_classes`` is then ignored.
        out_indices: with ``features_only``, which levels to return (default: all).
        **overrides: fields of the model's config to change (e.g. ``drop_path_rate=0.1``).
    """
    _check_name(name)
    if out_indices is not None and not features_only:
        raise VanEduError("out_indices is for features_only=True (a backbone's levels); got it without")
    if features_only:
        num_classes = 0
    for arg, value, least in (("num_classes", num_classes, 0), ("in_chans", in_chans, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            what = "a whole number >= 0 (0: no head)" if least == 0 else "a positive whole number"
            raise VanEduError(f"{arg} must be {what}, got {value!r}")
    model = _REGISTRY[name](num_classes=num_classes, in_chans=in_chans, **overrides)
    return model.as_features(out_indices) if features_only else model
