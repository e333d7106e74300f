"""The fast LKA (matrix products) computes the same function as the plain one (three nn.Conv2d).

Same outputs and gradients (input and every weight) in float32 to ~1e-5, on odd sizes, sizes the
dilation does not divide, batch 1, channels-last inputs, several (K, d), every Table 3 variant and
every way the fast path can take (dense, composed, polyphase, PyTorch's conv); bfloat16 and
autocast agree loosely; checkpoints move between the two.
"""
import pytest
import torch

from van_edu.errors import VanEduError
from van_edu.lka import LKA, LKA_IMPLS, LKA_VARIANTS
from van_edu.lka_fast import fast_plan
from van_edu.models import create_model

F32 = dict(atol=1e-5, rtol=1e-5)


def _pair(dim, K=21, d=3, variant="lka", dtype=torch.float32, seed=0):
    """A plain and a fast LKA holding the same weights (biases made non-zero)."""
    torch.manual_seed(seed)
    plain = LKA(dim, K, d, variant=variant, impl="plain")
    with torch.no_grad():
        for p in plain.parameters():
            p.normal_(0.0, 0.3)
    fast = LKA(dim, K, d, variant=variant, impl="fast")
    fast.load_state_dict(plain.state_dict(), strict=True)
    return plain.to(dtype), fast.to(dtype)


def _run(module, x, g, plan=None):
    """Output and gradients (input first, then the parameters in order)."""
    x = x.detach().clone().requires_grad_()
    module.zero_grad(set_to_none=True)
    y = module(x) if plan is None else module._fast_attention_map(x, plan) * x
    (y * g).sum().backward()
    return [y.detach(), x.grad] + [p.grad for p in module.parameters()]


def _assert_same(ref, out, **tol):
    """Output and input gradient to ``tol``; the weight gradients, sums over B*H*W products
    whose order differs between the two ways, to 10 x ``tol``."""
    names = ["output", "grad input"] + [f"grad param {i}" for i in range(len(ref) - 2)]
    for i, (name, a, b) in enumerate(zip(names, ref, out)):
        t = tol if i < 2 else {k: 10 * v for k, v in tol.items()}
        torch.testing.assert_close(b.float(), a.float(), msg=lambda m, name=name: f"{name}: {m}", **t)


def _inputs(shape, channels_last=False, dtype=torch.float32, seed=1):
    torch.manual_seed(seed)
    x, g = torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, g


@pytest.mark.parametrize("B, H, W", [(1, 7, 7), (2, 13, 9), (3, 10, 11), (1, 16, 16), (2, 29, 31)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_equals_plain_default_lka(B, H, W, channels_last):
    plain, fast = _pair(6)
    x, g = _inputs((B, 6, H, W), channels_last)
    _assert_same(_run(plain, x, g), _run(fast, x, g), **F32)


@pytest.mark.parametrize("K, d", [(21, 3), (7, 2), (14, 3), (28, 4), (10, 3), (9, 1)])
@pytest.mark.parametrize("B, H, W", [(1, 11, 7), (20, 5, 3), (2, 17, 14)])
def test_fast_equals_plain_for_other_kernels(K, d, B, H, W):
    plain, fast = _pair(4, K, d)
    x, g = _inputs((B, 4, H, W))
    _assert_same(_run(plain, x, g), _run(fast, x, g), **F32)


@pytest.mark.parametrize("plan", [["dense", "dense"], ["composed", "composed"], ["dense", "polyphase"],
                                  ["conv", "polyphase"], ["polyphase", "polyphase"], ["conv", "conv"],
                                  ["dense", "conv"]])
@pytest.mark.parametrize("K, d, H, W", [(21, 3, 14, 13), (7, 2, 9, 10), (28, 4, 11, 17), (10, 3, 8, 7)])
def test_every_route_of_the_fast_path(plan, K, d, H, W):
    """Whatever ``fast_plan`` picks, each method is exact on its own (the polyphase split with
    d = 1 is the dense matrix on one sub-grid)."""
    plain, fast = _pair(5, K, d)
    x, g = _inputs((3, 5, H, W))
    _assert_same(_run(plain, x, g), _run(fast, x, g, plan=plan), **F32)


@pytest.mark.parametrize("K, d", [(21, 3), (7, 2), (14, 3), (28, 4), (6, 4), (10, 3), (9, 2), (13, 5)])
@pytest.mark.parametrize("H, W", [(17, 23), (5, 6), (12, 9), (1, 8)])
def test_polyphase_on_uneven_sub_grids(K, d, H, W):
    """The sub-grids of a map the dilation does not divide have different sizes, and the input
    sits at an offset when the padding is not a multiple of d: all of it must stay exact."""
    plain, fast = _pair(3, K, d)
    x, g = _inputs((2, 3, H, W))
    _assert_same(_run(plain, x, g), _run(fast, x, g, plan=["dense", "polyphase"]), **F32)


@pytest.mark.parametrize("variant", sorted(LKA_VARIANTS))
@pytest.mark.parametrize("B, H", [(2, 9), (12, 3), (2, 15)])
def test_every_variant_fast_equals_plain(variant, B, H):
    plain, fast = _pair(4, variant=variant)
    x, g = _inputs((B, 4, H, H + 2))
    _assert_same(_run(plain, x, g), _run(fast, x, g), **F32)


@pytest.mark.parametrize("B, H", [(2, 7), (16, 4), (2, 14), (2, 30)])
def test_bfloat16_agrees_loosely(B, H):
    plain, fast = _pair(8, dtype=torch.bfloat16)
    x, g = _inputs((B, 8, H, H), dtype=torch.bfloat16)
    ref, out = _run(plain, x, g), _run(fast, x, g)
    for a, b in zip(ref, out):
        assert b.dtype == torch.bfloat16
        scale = a.float().abs().max().item()
        assert (a.float() - b.float()).abs().max().item() <= 0.05 * scale + 1e-2


@pytest.mark.parametrize("H", [6, 13, 30])
def test_autocast_bfloat16_runs_and_agrees(H):
    plain, fast = _pair(8)
    x, g = _inputs((4, 8, H, H))
    outs = []
    for m in (plain, fast):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs.append(_run(m, x, g))
    for a, b in zip(*outs):
        assert b.dtype == a.dtype
        assert (a.float() - b.float()).abs().max().item() <= 0.05 * a.float().abs().max().item() + 1e-2


def test_fast_plan_rule():
    convs = LKA(4).depthwise_convs()
    assert fast_plan(128, 7, 7, convs) == ["composed", "composed"]     # 49 pixels < 128 images
    assert fast_plan(32, 7, 7, convs) == ["dense", "dense"]
    assert fast_plan(128, 14, 14, convs) == ["conv", "polyphase"]
    assert fast_plan(32, 56, 56, convs) == ["conv", "conv"]            # 19 x 19 sub-grids
    assert fast_plan(8, 4, 4, LKA(4, variant="no_dw_d_conv").depthwise_convs()) == ["dense"]


def test_impl_choice_and_errors():
    assert LKA_IMPLS == ("auto", "fast", "plain")
    x = torch.randn(1, 4, 8, 8)
    assert LKA(4).uses_fast_path(x)                      # auto: fast on the CPU
    assert not LKA(4, impl="plain").uses_fast_path(x)
    assert not LKA(4, variant="dense", impl="fast").uses_fast_path(x)
    assert "impl='auto'" in repr(LKA(4))
    with pytest.raises(VanEduError, match="unknown LKA impl 'quick'"):
        LKA(4, impl="quick")


def test_receptive_field_and_zero_gating_hold_on_the_fast_path():
    from van_edu.lka import measure_receptive_field
    torch.manual_seed(0)
    assert measure_receptive_field(LKA(4, impl="fast"), channels=4, size=48) == (23, 23)
    m = LKA(6, impl="fast")
    x = torch.randn(2, 6, 13, 9)
    x[:, :, 4, 4] = 0
    assert torch.all(m(x)[:, :, 4, 4] == 0)


def test_van_b0_checkpoint_moves_between_impls():
    torch.manual_seed(0)
    plain = create_model("van_b0", lka_impl="plain").eval()
    fast = create_model("van_b0", lka_impl="fast").eval()
    assert plain.block1[0].attn.spatial_gating_unit.impl == "plain"
    assert fast.block1[0].attn.spatial_gating_unit.impl == "fast"
    fast.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), atol=1e-5, rtol=1e-5)
    # and back: the fast model's state dict has exactly the plain one's keys
    assert list(fast.state_dict()) == list(plain.state_dict())


def test_hooks_and_flop_counters_see_the_plain_convs():
    """Tools that watch the convs (hooks: torchinfo, Grad-CAM; FlopCounterMode) get the plain
    path, so counts and captured activations do not depend on ``impl``."""
    from torch.utils.flop_counter import FlopCounterMode
    m = LKA(4, impl="fast")
    x = torch.randn(2, 4, 9, 9)
    assert m.uses_fast_path(x)
    seen = []
    handle = m.conv0.register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    assert not m.uses_fast_path(x)
    m(x)
    assert seen == [torch.Size([2, 4, 9, 9])]
    handle.remove()
    assert m.uses_fast_path(x)
    flops = {}
    for impl in ("plain", "fast"):
        with FlopCounterMode(display=False) as counter:
            LKA(4, impl=impl)(x)
        flops[impl] = counter.get_total_flops()
    assert flops["fast"] == flops["plain"] > 0


def _model_grads(model, x, g):
    x = x.detach().clone().requires_grad_()
    model.zero_grad(set_to_none=True)
    y = model(x)
    (y * g).sum().backward()
    return y.detach(), x.grad, [p.grad for p in model.parameters()], [b.clone() for b in model.buffers()]


@pytest.mark.parametrize("name, shape", [("van_mini", (8, 1, 28, 28)), ("van_mini", (1, 1, 29, 31)),
                                         ("van_b0", (2, 3, 64, 64))])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_whole_model_on_the_fast_path_equals_the_plain_one(name, shape, train, channels_last):
    """``lka_impl="auto"`` on the CPU (fast LKA, channels-last stages) against ``"plain"``: logits
    within 1e-5, gradients within 1e-4 of the largest one, BatchNorm statistics alike."""
    torch.manual_seed(0)
    kw = {"num_classes": 10, "in_chans": shape[1]}
    plain = create_model(name, lka_impl="plain", **kw).train(train)
    fast = create_model(name, **kw).train(train)
    fast.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(shape)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    assert fast.uses_channels_last(x) and not plain.uses_channels_last(x)
    g = torch.randn(shape[0], 10)
    (ya, gxa, gpa, ba), (yb, gxb, gpb, bb) = _model_grads(plain, x, g), _model_grads(fast, x, g)
    torch.testing.assert_close(yb, ya, atol=1e-5, rtol=0)
    scale = max(p.abs().max() for p in gpa)
    assert max((a - b).abs().max() for a, b in zip(gpa, gpb)) <= 1e-4 * scale
    torch.testing.assert_close(gxb, gxa, atol=1e-4 * gxa.abs().max().item(), rtol=0)
    for a, b in zip(ba, bb):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
