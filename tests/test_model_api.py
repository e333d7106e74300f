"""The API the three families share (``ImageClassifier``), the VAN's stages, its variants as
named factories, and which LKA path runs (``lka_impl``, ``describe``)."""
import inspect
import re

import pytest
import torch
from torch import nn

from van_edu.complexity import count_params
from van_edu.errors import VanEduError
from van_edu.lka import LKA, observation_probes
from van_edu.models import create_model, list_models, model_family
from van_edu.models import resnet as resnet_module
from van_edu.models import van as van_module
from van_edu.models import vit as vit_module
from van_edu.models.van import VAN_CONFIGS, Stage

# One small model per family, with an input it takes.
SMALL = {"van_mini": (2, 1, 28, 28), "vit_mini": (2, 1, 28, 28), "resnet_mini": (2, 1, 28, 28)}


@pytest.mark.parametrize("name, shape", SMALL.items())
def test_forward_is_features_then_pooled_head(name, shape):
    torch.manual_seed(0)
    m = create_model(name, num_classes=7, in_chans=shape[1]).eval()
    x = torch.randn(shape)
    with torch.no_grad():
        feats = m.forward_features(x)                                   # [B, C, h, w]
        pooled = m.forward_head(feats, pre_logits=True)
        logits = m(x)
    assert feats.shape[:2] == (shape[0], m.num_features) and feats.dim() == 4
    torch.testing.assert_close(pooled, feats.mean(dim=(2, 3)))          # the mean over all positions
    torch.testing.assert_close(logits, pooled @ m.head.weight.T + m.head.bias)
    assert m.num_classes == 7 and logits.shape == (shape[0], 7)


@pytest.mark.parametrize("name, shape", SMALL.items())
def test_no_head_through_create_model_and_reset_classifier(name, shape):
    """num_classes=0 (timm's convention): no head, forward gives the pooled features; the same
    weights then take a new head of any size, and only the head changes."""
    torch.manual_seed(0)
    headless = create_model(name, num_classes=0, in_chans=shape[1]).eval()
    assert isinstance(headless.head, nn.Identity) and headless.num_classes == 0
    x = torch.randn(shape)
    with torch.no_grad():
        feats = headless(x)
    assert feats.shape == (shape[0], headless.num_features)
    before = {k: v.clone() for k, v in headless.state_dict().items()}
    headless.reset_classifier(5)
    assert isinstance(headless.head, nn.Linear) and headless.head.out_features == 5
    assert headless.num_classes == 5
    after = headless.state_dict()
    assert set(after) - set(before) == {"head.weight", "head.bias"}
    assert all(torch.equal(before[k], after[k]) for k in before)       # the backbone is untouched
    with torch.no_grad():
        torch.testing.assert_close(headless(x), headless.head(feats))
    with pytest.raises(VanEduError, match=r"num_classes must be a whole number >= 0"):
        headless.reset_classifier(-2)


def test_reset_head_follows_each_familys_init_and_dtype():
    torch.manual_seed(0)
    van = create_model("van_mini", num_classes=10, in_chans=1).double()
    van.head.weight.data.fill_(1.0)
    van.reset_classifier(10)
    assert van.head.weight.dtype == torch.float64
    assert 0.017 < van.head.weight.std() < 0.023                        # trunc-normal, std 0.02 (1,280 draws)
    assert torch.count_nonzero(van.head.bias) == 0
    assert van.config.num_classes == 10
    res = create_model("resnet_mini", num_classes=10, in_chans=1)
    res.reset_classifier(10)
    bound = 1 / res.num_features ** 0.5                                 # PyTorch's default Linear init
    assert res.head.weight.abs().max() <= bound and res.head.bias.abs().max() > 0


@pytest.mark.parametrize("name, stride", [("van_b0", 32), ("van_mini", 8), ("resnet_mini", 8),
                                          ("resnet_imagenette", 32), ("vit_mini", 4)])
def test_total_stride_is_one_attribute_and_is_true(name, stride):
    """``total_stride`` is an attribute of every model, equal to input size / feature-map size."""
    m = create_model(name, in_chans=1).eval()
    assert m.total_stride == stride
    side = 64 if name != "vit_mini" else 28
    with torch.no_grad():
        feats = m.forward_features(torch.randn(1, 1, side, side))
    assert feats.shape[-1] == -(-side // stride)                        # ceil: padded convs round up


def test_the_input_check_is_shared_and_says_what_was_expected():
    for name in ("van_mini", "resnet_mini"):
        m = create_model(name, in_chans=1)
        with pytest.raises(VanEduError, match=r"expected images \[B, 1, H, W\] for in_chans=1, got shape \[2, 3, 28, 28\]"):
            m(torch.randn(2, 3, 28, 28))
        with pytest.raises(VanEduError, match=f"input 4x4 is too small: this {type(m).__name__} down-samples by 8"):
            m(torch.randn(1, 1, 4, 4))
    with pytest.raises(VanEduError, match=r"this ViT expects images \[B, 1, 28, 28\], got shape \[1, 1, 28\]"):
        create_model("vit_mini", in_chans=1)(torch.randn(1, 1, 28))


def test_every_variant_is_a_named_documented_factory():
    """``van_b0`` can be found by grepping: a function of that name in its family's module, with a
    docstring of its own whose parameter count is the model's, and its arguments in its signature."""
    modules = {"van": van_module, "vit": vit_module, "resnet": resnet_module}
    docs = set()
    for name in list_models():
        module = modules[model_family(name)]
        fn = getattr(module, name)
        assert fn.__name__ == name and f"def {name}(" in inspect.getsource(module)
        assert list(inspect.signature(fn).parameters)[:2] == ["num_classes", "in_chans"]
        docs.add(fn.__doc__)
        stated = re.search(r"([0-9.]+) M parameters", fn.__doc__)
        if stated:                                                      # e.g. "4.1 M parameters"
            with torch.device("meta"):
                n = count_params(fn(num_classes=1000 if name.startswith("van_b") else 10))
            assert round(n / 1e6, 1) == float(stated.group(1)), (name, n)
    assert len(docs) == len(list_models())                             # each its own docstring
    assert set(VAN_CONFIGS) == set(list_models("van"))


def test_stages_are_modules_and_the_keys_stay_the_authors():
    m = create_model("van_b0").eval()
    assert [type(s) for s in m.stages] == [Stage] * 4
    for s, stage in enumerate(m.stages, start=1):                       # the same modules, not copies
        assert stage.patch_embed is getattr(m, f"patch_embed{s}")
        assert stage.blocks is getattr(m, f"block{s}") and stage.norm is getattr(m, f"norm{s}")
    assert not any(k.startswith("stages") for k in m.state_dict())     # no key twice
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        h = x
        for stage in m.stages:
            h = stage(h)
        torch.testing.assert_close(h, m.forward_features(x))
    moved = m.double()                                                  # .to() reaches the stages' parts
    assert m.stages[2].blocks[0].mlp.fc1.weight.dtype == torch.float64 and moved is m


def test_the_lka_path_is_visible_and_switchable():
    m = create_model("van_mini", num_classes=10, in_chans=1).eval()
    assert "no forward yet" in m.describe()
    with torch.no_grad():
        m(torch.randn(2, 1, 28, 28))
    assert "lka_impl='auto'" in m.describe() and "6 of 6 LKAs fast" in m.describe()
    assert "last forward: fast" in repr(m.stages[0].blocks[0].attn.spatial_gating_unit)
    m.set_lka_impl("plain")
    with torch.no_grad():
        m(torch.randn(2, 1, 28, 28))
    assert "lka_impl='plain'" in m.describe() and "6 of 6 LKAs plain" in m.describe()
    assert all(lka.impl == "plain" for lka in m.lka_modules())
    with pytest.raises(VanEduError, match="unknown LKA impl 'quick'"):
        m.set_lka_impl("quick")


def test_a_learners_hook_moves_the_lka_to_the_plain_path_and_says_so():
    lka = LKA(4, impl="auto")
    x = torch.randn(2, 4, 9, 9)
    lka(x)
    assert lka.last_path == "fast"
    seen = []
    handle = lka.conv_spatial.register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    lka(x)
    assert lka.last_path == "plain" and seen == [torch.Size([2, 4, 9, 9])]
    handle.remove()
    handle = torch.nn.modules.module.register_module_forward_pre_hook(lambda mod, inp: None)
    try:
        lka(x)
        assert lka.last_path == "plain"
    finally:
        handle.remove()
    lka(x)
    assert lka.last_path == "fast"


def test_this_torch_has_every_probe_the_fallback_relies_on():
    """The fallback reads torch internals (there is no public API); if an upgrade removes one, the
    fast path is silently never taken: this test makes that loud."""
    probes = observation_probes()
    assert probes and all(probes.values()), (torch.__version__, probes)
