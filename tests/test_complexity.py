"""van_edu.complexity: one multiply-add counter for every model, checked against counts by hand,
against the layer-by-layer count from shapes (one multiply-add per output for a bias) plus the
attention products, on the meta device against a real CPU run; and the paper's Table 2."""
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from van_edu.complexity import MacCounter, count_macs, count_params, input_shape, table2
from van_edu.models import DEMO_MODELS, ViT, build_model, create_model

ROOT = Path(__file__).resolve().parents[1]
FASHION = SimpleNamespace(num_classes=10, in_chans=1, image_size=28)   # what build_model reads


@pytest.mark.parametrize("bias", [True, False])
def test_a_convolution_counted_by_hand(bias):
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=bias)
    outputs = 6 * 5 * 5                                   # [6, 5, 5] per image
    assert count_macs(conv, (2, 4, 5, 5)) == outputs * (4 * 3 * 3 + bias)
    grouped = nn.Conv2d(4, 8, 3, stride=2, groups=2, bias=bias)   # 7x7 -> 3x3, 2 input channels per group
    assert count_macs(grouped, (1, 4, 7, 7)) == 8 * 3 * 3 * (2 * 3 * 3 + bias)
    dilated = nn.Conv2d(2, 2, 7, dilation=3, padding=9, groups=2, bias=bias)   # LKA's DW-D-Conv
    assert count_macs(dilated, (1, 2, 10, 10)) == 2 * 10 * 10 * (49 + bias)


@pytest.mark.parametrize("bias", [True, False])
def test_a_linear_layer_counted_by_hand(bias):
    linear = nn.Linear(5, 3, bias=bias)
    assert count_macs(linear, (2, 5)) == 3 * (5 + bias)
    assert count_macs(linear, (1, 7, 5)) == 7 * 3 * (5 + bias)        # once per token


class Attend(nn.Module):
    """softmax(Q K^T / sqrt(e)) V with Q = K = V = the input [B, heads, N, e]."""

    def forward(self, x):
        return F.scaled_dot_product_attention(x, x, x)


def test_attention_is_two_products_2_n2_d_on_meta_and_on_the_cpu():
    heads, n, e = 2, 10, 4
    expected = 2 * n * n * (heads * e)                     # Q K^T and A V: N^2 D each, D = heads * e
    assert count_macs(Attend(), (1, heads, n, e)) == expected
    with torch.no_grad(), MacCounter() as counter:         # the CPU's fused kernel, really run
        Attend()(torch.randn(3, heads, n, e))
    assert counter.macs == 3 * expected


def layer_by_layer(model: nn.Module, shape) -> int:
    """Multiply-adds of the convolutions and linear layers from their output shapes (forward hooks,
    on the meta device): (C_in / groups) * k_h * k_w per output value of a conv, in_features per
    output value of a linear layer, plus one for a bias. Attention products are no layer."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        else:
            per_output = module.in_features
        total += output.numel() * (per_output + (module.bias is not None))

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model.eval()(torch.empty(shape, device="meta"))
    return total // shape[0]


def attention_products(model: nn.Module) -> int:
    """A ViT's Q K^T and A V in every layer: 2 N^2 D multiply-adds per layer."""
    if not isinstance(model, ViT):
        return 0
    tokens = model.grid ** 2
    return model.config.depth * 2 * tokens ** 2 * model.config.embed_dim


@pytest.mark.parametrize("name, data", [(n, FASHION) for n in DEMO_MODELS] + [
    ("vit_cifar", SimpleNamespace(num_classes=10, in_chans=3, image_size=32)),
    ("van_b0", SimpleNamespace(num_classes=1000, in_chans=3, image_size=224))])
def test_the_count_is_the_layers_plus_the_attention_products(name, data):
    with torch.device("meta"):
        model = build_model(name, data)
    shape = (2, data.in_chans, data.image_size, data.image_size)
    assert count_macs(model, shape) == layer_by_layer(model, shape) + attention_products(model)


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_the_count_on_meta_equals_the_count_of_a_real_cpu_run(name):
    torch.manual_seed(0)
    model = build_model(name, FASHION).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad(), MacCounter() as counter:
        model(torch.randn(2, 1, 28, 28))
    assert count_macs(model, (1, 1, 28, 28)) == counter.macs // 2
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())   # weights untouched
    assert next(model.parameters()).device.type == "cpu"


def test_the_comparisons_recorded_counts_are_the_counted_ones():
    """notebooks/assets/compare/results.json records what `van-edu compare` counted (notebook 07
    asserts the same); the counter must still give exactly these numbers."""
    runs = json.loads((ROOT / "notebooks" / "assets" / "compare" / "results.json").read_text())["runs"]
    recorded = {r["model"]: r["macs"] for r in runs}
    assert recorded == {"van_mini": 19_591_242, "vit_mini": 28_432_266, "resnet_mini": 22_094_218}
    for name, macs in recorded.items():
        with torch.device("meta"):
            model = build_model(name, FASHION)
        assert count_macs(model, (1, 1, 28, 28)) == macs, name


def test_lka_is_counted_as_its_convolutions_whatever_its_impl():
    counts = {}
    for impl in ("plain", "fast", "auto"):
        model = create_model("van_mini", num_classes=10, in_chans=1, lka_impl=impl)
        counts[impl] = count_macs(model, 28)                # a side length: one image, in_chans channels
    assert counts["fast"] == counts["plain"] == counts["auto"] > 0


def test_count_macs_leaves_the_training_mode_and_accepts_a_side_length():
    model = create_model("resnet_mini", num_classes=10, in_chans=1).train()
    assert count_macs(model, 28) == count_macs(model, (1, 1, 28, 28)) == count_macs(model, (4, 1, 28, 28))
    assert model.training
    assert input_shape(model, 28) == (1, 1, 28, 28) and input_shape(nn.ReLU(), 8) == (1, 3, 8, 8)


def test_count_params_all_and_trainable():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    assert count_params(model) == 3 * 4 + 4 + 4 * 2 + 2
    assert count_params(model, trainable_only=True) == 4 * 2 + 2


# Table 2 of the paper: parameters of a 21x21 convolution on C channels, biases ignored:
# standard 441 C^2, MobileNet-style (21x21 depth-wise + 1x1) 441 C + C^2, VAN C (49 + 25 + C).
PAPER_TABLE_2 = {32: (451_584, 15_136, 3_392), 64: (1_806_336, 32_320, 8_832),
                 128: (7_225_344, 72_832, 25_856), 256: (28_901_376, 178_432, 84_480),
                 512: (115_605_504, 487_936, 300_032)}


def test_table2_counts_equal_the_papers_table_2():
    rows = table2()
    assert [r["C"] for r in rows] == list(PAPER_TABLE_2)
    for r in rows:
        assert (r["standard"], r["mobilenet"], r["van"]) == PAPER_TABLE_2[r["C"]]
        assert (r["paper_standard"], r["paper_mobilenet"], r["paper_van"]) == PAPER_TABLE_2[r["C"]]
    other = table2(channels=(16,), kernel_size=14, dilation=3)[0]   # no paper values for other K, d
    assert other["van"] == 16 * (25 + 25 + 16) and other["paper_van"] is None
