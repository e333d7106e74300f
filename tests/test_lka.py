"""LKA and its arithmetic: Eq. (3), Table 2, the decomposition rule, receptive fields, variants."""
import math

import pytest
import torch
from torch import nn

from van_edu.errors import VanEduError
from van_edu.lka import (
    LKA,
    LKA_VARIANTS,
    best_dilation,
    conv_params,
    decomposition,
    lka_params,
    measure_receptive_field,
    mobilenet_params,
    receptive_field,
    same_padding,
)


def test_default_decomposition_is_5x5_then_7x7_dilation_3():
    d = decomposition(21, 3)
    assert (d.dw_kernel, d.dw_padding, d.dwd_kernel, d.dwd_padding, d.dilation) == (5, 2, 7, 9, 3)


@pytest.mark.parametrize("k, d", [(1, 1), (3, 1), (5, 1), (7, 3), (5, 2), (4, 2), (21, 1)])
def test_same_padding_keeps_the_size(k, d):
    p = same_padding(k, d)
    assert p == d * (k - 1) // 2
    x = torch.randn(1, 1, 9, 10)
    assert torch.nn.functional.conv2d(x, torch.ones(1, 1, k, k), padding=p, dilation=d).shape == x.shape


@pytest.mark.parametrize("K, d", [(21, 3), (7, 2), (14, 3), (28, 4), (10, 3), (9, 1)])
def test_decomposition_paddings_are_same_padding(K, d):
    dec = decomposition(K, d)
    assert dec.dw_padding == same_padding(dec.dw_kernel)
    symmetric = d * (dec.dwd_kernel - 1) % 2 == 0          # else no symmetric padding keeps the size
    assert dec.dwd_padding == (same_padding(dec.dwd_kernel, d) if symmetric else None)


@pytest.mark.parametrize("K, d, dw, dwd", [(7, 2, 3, 4), (14, 3, 5, 5), (21, 3, 5, 7), (28, 4, 7, 7)])
def test_table6_decompositions(K, d, dw, dwd):
    dec = decomposition(K, d)
    assert (dec.dw_kernel, dec.dwd_kernel) == (dw, dwd)


def test_eq3_brackets_for_k21_and_minimum_at_d3():
    # Eq. (3) without the C^2 term, divided by C: ceil(K/d)^2 + (2d-1)^2
    brackets = [lka_params(21, d, 1) - 1 for d in range(1, 6)]
    assert brackets == [442, 130, 74, 85, 106]
    assert best_dilation(21) == 3


@pytest.mark.parametrize("C", [1, 7, 64, 512])
def test_best_dilation_does_not_depend_on_channels(C):
    d_star = min(range(1, 22), key=lambda d: lka_params(21, d, C))
    assert d_star == best_dilation(21) == 3


@pytest.mark.parametrize("C, standard, mobile, van", [
    (32, 451_584, 15_136, 3_392), (64, 1_806_336, 32_320, 8_832), (128, 7_225_344, 72_832, 25_856),
    (256, 28_901_376, 178_432, 84_480), (512, 115_605_504, 487_936, 300_032)])
def test_table2_formulas(C, standard, mobile, van):
    assert conv_params(21, C) == standard
    assert mobilenet_params(21, C) == mobile
    assert lka_params(21, 3, C) == van


@pytest.mark.parametrize("K, d", [(21, 3), (7, 2), (14, 3), (28, 4), (21, 2), (9, 1)])
def test_module_weights_match_eq3(K, d):
    C = 16
    m = LKA(C, K, d)
    weights = sum(p.numel() for n, p in m.named_parameters() if n.endswith("weight"))
    biases = sum(p.numel() for n, p in m.named_parameters() if n.endswith("bias"))
    assert weights == lka_params(K, d, C)
    assert biases == 3 * C  # all three convs have biases


def test_default_receptive_field_is_23_computed_and_measured():
    assert receptive_field(21, 3) == 23
    torch.manual_seed(0)
    assert measure_receptive_field(LKA(4), channels=4, size=48) == (23, 23)


@pytest.mark.parametrize("K, d", [(7, 2), (14, 3), (28, 4)])
def test_measured_receptive_field_matches_formula(K, d):
    torch.manual_seed(0)
    rf = (2 * d - 1) + d * (math.ceil(K / d) - 1)
    assert receptive_field(K, d) == rf
    assert measure_receptive_field(LKA(3, K, d), channels=3, size=64) == (rf, rf)


def test_lka_keeps_shape_on_odd_sizes_and_gates_by_multiplication():
    torch.manual_seed(0)
    m = LKA(6)
    x = torch.randn(2, 6, 13, 9)
    y = m(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, m.attention_map(x) * x)
    # the output is zero exactly where the input is zero: it is a product, not a sum
    x[:, :, 4, 4] = 0
    assert torch.all(m(x)[:, :, 4, 4] == 0)


def test_variants_compute_what_their_names_say():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 11, 11)
    full = LKA(4)
    variants = {v: LKA(4, variant=v) for v in LKA_VARIANTS}
    for v, m in variants.items():
        # copy the weights the variant shares with the full LKA
        m.load_state_dict({k: t for k, t in full.state_dict().items() if k in m.state_dict()}, strict=False)
        assert m(x).shape == x.shape, v
    attn = full.attention_map(x)
    torch.testing.assert_close(variants["no_attention"](x), attn)
    torch.testing.assert_close(variants["add"](x), attn + x)
    torch.testing.assert_close(variants["sigmoid"](x), attn.sigmoid() * x)
    assert not hasattr(variants["no_dw_conv"], "conv0")
    assert not hasattr(variants["no_dw_d_conv"], "conv_spatial")
    assert not hasattr(variants["no_1x1"], "conv1")
    assert variants["dense"].conv_dense.weight.shape == (4, 4, 21, 21)


@pytest.mark.parametrize("K, d, fragment", [(21, 0, "dilation d must be between 1 and K"),
                                            (21, 22, "dilation d must be between 1 and K"),
                                            (1, 1, "at least 2"), (21.0, 3, "whole number"),
                                            (21, "3", "whole number")])
def test_invalid_k_or_d_is_a_clear_error(K, d, fragment):
    with pytest.raises(VanEduError, match=fragment):
        decomposition(K, d)
    with pytest.raises(VanEduError, match=fragment):
        LKA(8, K, d)


def test_wrong_channels_and_unknown_variant_are_clear_errors():
    with pytest.raises(VanEduError, match=r"expects input \[B, 8, H, W\]"):
        LKA(8)(torch.randn(1, 3, 16, 16))
    with pytest.raises(VanEduError, match="unknown LKA variant 'nope'.*sigmoid"):
        LKA(8, variant="nope")


# ---------------------------------------------------------------------------- what the split can express
def test_the_impulse_response_of_two_convs_is_one_23x23_kernel_per_channel():
    from van_edu.lka import impulse_response

    torch.manual_seed(0)
    dec = decomposition(21, 3)
    dw = nn.Conv2d(3, 3, 5, padding=2, groups=3, bias=False)
    dwd = nn.Conv2d(3, 3, 7, padding=9, dilation=3, groups=3, bias=False)
    k = impulse_response(nn.Sequential(dw, dwd), 3, dec.receptive_field)          # [3, 23, 23]
    assert k.shape == (3, 23, 23)
    x = torch.randn(1, 3, 40, 40)
    one = nn.Conv2d(3, 3, 23, padding=11, groups=3, bias=False)
    with torch.no_grad():
        one.weight.copy_(k.flip(-1, -2)[:, None])      # a response is the correlation kernel flipped
        torch.testing.assert_close(one(x)[..., 11:-11, 11:-11], dwd(dw(x))[..., 11:-11, 11:-11])


def test_fit_decomposition_recovers_a_composed_kernel_and_not_a_random_one():
    from van_edu.lka import fit_decomposition, impulse_response

    torch.manual_seed(0)
    dw = nn.Conv2d(4, 4, 5, padding=2, groups=4, bias=False)
    dwd = nn.Conv2d(4, 4, 7, padding=9, dilation=3, groups=4, bias=False)
    reachable = impulse_response(nn.Sequential(dw, dwd), 4, 23)
    assert fit_decomposition(reachable, 21, 3, steps=300)["residual"] < 0.05     # in the family: found
    dense = nn.Conv2d(4, 4, 21, padding=10, groups=4, bias=False)
    fitted = fit_decomposition(impulse_response(dense, 4, 23), 21, 3, steps=300)
    assert fitted["residual"] > 0.5                    # 74 numbers cannot express 441 random ones
    assert fitted["kernel"].shape == (4, 23, 23) and set(fitted) >= {"dw", "dwd", "per_channel"}
