"""van_edu.complexity: one multiply-add counter for every model, checked against counts by hand,
against the layer-by-layer count from shapes (one multiply-add per output for a bias) plus the
attention products, on the meta device against a real CPU run; and the paper's Table 2."""
import json
import math
from dataclasses import replace
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


# ----------------------------------------------------------------------------- counts by formula
# Multiply-adds of one image from a model's config alone, layer by layer as the architectures are
# written: a conv makes H_out * W_out * C_out outputs of (C_in / groups) * k * k multiply-adds, plus
# one for a bias; a linear layer makes out_features outputs per token of in_features (+1) each;
# attention adds Q K^T and A V, N^2 D each. Norms, activations and element-wise products are not
# multiply-adds of a layer and are not counted.
def side_after(side: int, kernel: int, stride: int, padding: int) -> int:
    return (side + 2 * padding - kernel) // stride + 1


def conv_macs(c_in: int, c_out: int, kernel: int, side_out: int, groups: int = 1, bias: bool = True) -> int:
    return side_out * side_out * c_out * (c_in // groups * kernel * kernel + bias)


def linear_macs(d_in: int, d_out: int, tokens: int = 1, bias: bool = True) -> int:
    return tokens * d_out * (d_in + bias)


def van_macs(c, side: int) -> int:
    """Per stage: the overlapping patch embedding (kernel k, stride s, padding k // 2), then per
    block proj_1, LKA (DW-Conv (2d-1)^2, DW-D-Conv ceil(K/d)^2, 1x1), proj_2, and the MLP (1x1 to
    r*C, 3x3 depth-wise, 1x1 back); the head on the pooled features."""
    total, c_in = 0, c.in_chans
    for s, (dim, depth, ratio) in enumerate(zip(c.embed_dims, c.depths, c.mlp_ratios)):
        kernel, stride = (c.stem_kernel, c.stem_stride) if s == 0 else (3, 2)
        side = side_after(side, kernel, stride, kernel // 2)
        total += conv_macs(c_in, dim, kernel, side)
        hidden = int(dim * ratio)
        block = (conv_macs(dim, dim, 1, side)                                   # proj_1
                 + conv_macs(dim, dim, 2 * c.dilation - 1, side, groups=dim)     # DW-Conv
                 + conv_macs(dim, dim, math.ceil(c.kernel_size / c.dilation), side, groups=dim)  # DW-D-Conv
                 + conv_macs(dim, dim, 1, side)                                 # LKA's 1x1
                 + conv_macs(dim, dim, 1, side)                                 # proj_2
                 + conv_macs(dim, hidden, 1, side)                              # fc1
                 + conv_macs(hidden, hidden, 3, side, groups=hidden)            # the MLP's DW 3x3
                 + conv_macs(hidden, dim, 1, side))                             # fc2
        total += depth * block
        c_in = dim
    return total + linear_macs(c_in, c.num_classes)


def vit_macs(c) -> int:
    """The patch embedding (a conv of kernel and stride p), then per layer qkv, Q K^T and A V,
    the output projection and the MLP, on N = (image / p)^2 tokens; the head."""
    tokens, d = (c.image_size // c.patch_size) ** 2, c.embed_dim
    hidden = int(d * c.mlp_ratio)
    layer = (linear_macs(d, 3 * d, tokens) + 2 * tokens * tokens * d + linear_macs(d, d, tokens)
             + linear_macs(d, hidden, tokens) + linear_macs(hidden, d, tokens))
    patches = conv_macs(c.in_chans, d, c.patch_size, c.image_size // c.patch_size)
    return patches + c.depth * layer + linear_macs(d, c.num_classes)


def resnet_macs(c, side: int) -> int:
    """The 3x3 stem, then basic blocks (two 3x3 convs, no biases; the first block of stages 2+ has
    stride 2 and a 1x1 projection shortcut, as has any block changing the width); the head."""
    assert c.stem == "small", "the formula is written for the small-image stem"
    side = side_after(side, 3, c.stem_stride, 1)
    total, c_in = conv_macs(c.in_chans, c.widths[0], 3, side, bias=False), c.widths[0]
    for i, (dim, depth) in enumerate(zip(c.widths, c.depths)):
        for j in range(depth):
            stride = 2 if i > 0 and j == 0 else 1
            side = side_after(side, 3, stride, 1)
            total += conv_macs(c_in, dim, 3, side, bias=False) + conv_macs(dim, dim, 3, side, bias=False)
            if stride != 1 or c_in != dim:
                total += conv_macs(c_in, dim, 1, side, bias=False)
            c_in = dim
    return total + linear_macs(c_in, c.num_classes)


def macs_by_formula(model: nn.Module, side: int) -> int:
    family = type(model).__name__
    if family == "VAN":
        return van_macs(model.config, side)
    if family == "ViT":
        return vit_macs(model.config)
    return resnet_macs(model.config, side)


def test_the_formulas_on_a_count_done_in_full_by_hand():
    """van_mini's first block on 28 px, written out: a 14x14 map of 32 channels, MLP ratio 4."""
    n, c, h = 14 * 14, 32, 128
    by_hand = n * (c * (c + 1) + c * 26 + c * 50 + c * (c + 1) + c * (c + 1) + h * (c + 1) + h * 10 + c * (h + 1))
    with torch.device("meta"):
        model = build_model("van_mini", FASHION)
    one_block = replace(model.config, embed_dims=(32,), depths=(1,), mlp_ratios=(4,), num_classes=0)
    stem = 14 * 14 * 32 * (1 * 3 * 3 + 1)
    assert van_macs(one_block, 28) == stem + by_hand


@pytest.mark.parametrize("name, data", [(n, FASHION) for n in DEMO_MODELS] + [
    ("van_cifar", SimpleNamespace(num_classes=10, in_chans=3, image_size=32)),
    ("vit_cifar", SimpleNamespace(num_classes=10, in_chans=3, image_size=32)),
    ("resnet_cifar", SimpleNamespace(num_classes=10, in_chans=3, image_size=32)),
    ("van_b0", SimpleNamespace(num_classes=1000, in_chans=3, image_size=224))])
def test_the_count_equals_the_formula_from_the_config(name, data):
    with torch.device("meta"):
        model = build_model(name, data)
    side = data.image_size
    assert count_macs(model, (1, data.in_chans, side, side)) == macs_by_formula(model, side)


def test_the_comparisons_recorded_counts_are_the_formulas():
    """notebooks/assets/compare/results.json records what `van-edu compare` counted (notebook 07
    asserts the same); the configs' formulas and the counter must both give these numbers."""
    runs = json.loads((ROOT / "notebooks" / "assets" / "compare" / "results.json").read_text())["runs"]
    recorded = {r["model"]: r["macs"] for r in runs}
    assert set(recorded) == set(DEMO_MODELS)
    for name, macs in recorded.items():
        with torch.device("meta"):
            model = build_model(name, FASHION)
        assert macs == macs_by_formula(model, 28), name
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
