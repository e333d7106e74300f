"""The Semantic FPN: its neck against the definition written out here, shapes, any backbone."""
import pytest
import torch
import torch.nn.functional as F

from van_edu.errors import VanEduError
from van_edu.models import create_model
from van_edu.models.fpn import FPN, FPNHead, SemanticFPN, create_segmenter


def test_the_neck_is_lateral_top_down_and_smoothing():
    torch.manual_seed(0)
    neck = FPN([4, 6, 8], 5)
    maps = [torch.randn(2, 4, 16, 16), torch.randn(2, 6, 8, 8), torch.randn(2, 8, 4, 4)]
    # by hand: p3 = L3; p2 = L2 + up(p3); p1 = L1 + up(p2): the coarsest information reaches the finest
    lat = [F.conv2d(m, c.weight, c.bias) for m, c in zip(maps, neck.lateral_convs)]
    top = lat[2]
    mid = lat[1] + top.repeat_interleave(2, -1).repeat_interleave(2, -2)
    low = lat[0] + mid.repeat_interleave(2, -1).repeat_interleave(2, -2)
    want = [F.conv2d(t, c.weight, c.bias, padding=1) for t, c in zip((low, mid, top), neck.fpn_convs)]
    for got, w in zip(neck(maps), want):
        torch.testing.assert_close(got, w)


def test_the_head_brings_every_level_to_the_finest_stride():
    head = FPNHead(8, 6, [4, 8, 16, 32], num_classes=3)
    assert [sum(isinstance(m, torch.nn.Conv2d) for m in h) for h in head.scale_heads] == [1, 1, 2, 3]
    out = head([torch.randn(1, 8, 32 // s * 4, 32 // s * 4) for s in (4, 8, 16, 32)])
    assert out.shape == (1, 3, 32, 32)
    with pytest.raises(VanEduError, match="strides that double"):
        FPNHead(8, 6, [4, 12], num_classes=3)


@pytest.mark.parametrize("backbone, kw", [("van_mini", {}), ("resnet_mini", {}),
                                          ("vit_mini", {"image_size": 64, "out_indices": (1, 2, 3)})])
def test_any_backbone_plugs_in_and_the_logits_have_the_input_size(backbone, kw):
    seg = create_segmenter(backbone, num_classes=11, in_chans=1, neck_channels=16, head_channels=16, **kw)
    x = torch.randn(2, 1, 64, 64)
    y = seg(x)
    assert y.shape == (2, 11, 64, 64)
    target = torch.randint(0, 11, (2, 64, 64))
    F.cross_entropy(y, target).backward()                     # a pixel-wise loss reaches every parameter
    assert all(p.grad is not None for p in seg.parameters())


def test_a_classifier_is_not_a_backbone():
    with pytest.raises(VanEduError, match="not a backbone.*features_only=True"):
        SemanticFPN(create_model("van_mini"), num_classes=3)
    with pytest.raises(VanEduError, match="num_classes >= 2"):
        create_segmenter("van_mini", num_classes=1)


def test_the_recipe_benchmarks_variants_build_and_differ_only_as_named():
    """benchmarks/segmentation_recipe.py: every variant builds for the garments' shape, and the
    FPN-width variant really is narrower (its parameters fewer) than the preset's."""
    from types import SimpleNamespace

    from benchmark_scripts import load_benchmark

    from van_edu.complexity import count_params
    from van_edu.models import build_model

    bench = load_benchmark("segmentation_recipe")
    data = SimpleNamespace(task="segmentation", num_classes=11, in_chans=1, image_size=64)
    sizes = {}
    for name, (backbone, _, options) in bench.VARIANTS.items():
        with torch.device("meta"):
            sizes[name] = count_params(build_model(backbone, data, **{**bench.SEG.model_options(backbone), **options}))
    a, c = (next(v for k, v in sizes.items() if k.startswith(p)) for p in ("A:", "C:"))
    assert c < a
