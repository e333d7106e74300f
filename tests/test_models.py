"""VAN B0-B6 as the authors built them; the baselines; the registry; bad input."""
import pytest
import torch

from van_edu.compare import COMPARE_PRESETS
from van_edu.complexity import count_macs, count_params
from van_edu.errors import VanEduError
from van_edu.models import create_model, list_models, model_family

# Exact parameter counts with a 1000-class head, computed from the authors' code (models/van.py of
# VAN-Classification); the paper's Table 5 rounds them to 4.1, 13.9, 26.6, 44.8, 60.3, 90.0 and 200 M.
EXACT = {"van_b0": 4_105_800, "van_b1": 13_861_800, "van_b2": 26_578_472, "van_b3": 44_765_608,
         "van_b4": 60_283_176, "van_b5": 89_967_688, "van_b6": 199_829_416}


@pytest.mark.parametrize("name", list(EXACT))
def test_exact_parameter_counts(name):
    with torch.device("meta"):  # the count does not need real weights (B6 has 200 M)
        model = create_model(name, num_classes=1000)
    assert count_params(model) == EXACT[name]


@pytest.mark.parametrize("name, expected", [("van_b0", 0.877e9), ("van_b1", 2.513e9), ("van_b2", 5.025e9)])
def test_multiply_adds_at_224(name, expected):
    with torch.device("meta"):  # counting needs the shapes only
        model = create_model(name)
    macs = count_macs(model, 224)
    assert abs(macs - expected) / expected < 0.02


def official_b0_keys():
    """The state-dict keys of the authors' VAN-B0, written from the layout of their code
    (models/van.py of VAN-Classification), which their checkpoints use."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = []
    for s, depth in enumerate((3, 3, 5, 2), start=1):
        keys += [f"patch_embed{s}.proj.{p}" for p in ("weight", "bias")]
        keys += [f"patch_embed{s}.norm.{p}" for p in bn]
        for j in range(depth):
            b = f"block{s}.{j}"
            keys += [f"{b}.layer_scale_1", f"{b}.layer_scale_2"]
            keys += [f"{b}.norm1.{p}" for p in bn] + [f"{b}.norm2.{p}" for p in bn]
            for conv in ("attn.proj_1", "attn.spatial_gating_unit.conv0",
                         "attn.spatial_gating_unit.conv_spatial", "attn.spatial_gating_unit.conv1",
                         "attn.proj_2", "mlp.fc1", "mlp.dwconv.dwconv", "mlp.fc2"):
                keys += [f"{b}.{conv}.weight", f"{b}.{conv}.bias"]
        keys += [f"norm{s}.weight", f"norm{s}.bias"]
    return set(keys + ["head.weight", "head.bias"])


def test_state_dict_keys_are_the_authors():
    sd = create_model("van_b0").state_dict()
    assert set(sd) == official_b0_keys()
    assert sd["patch_embed1.proj.weight"].shape == (32, 3, 7, 7)
    assert sd["patch_embed2.proj.weight"].shape == (64, 32, 3, 3)
    assert sd["block1.0.attn.spatial_gating_unit.conv0.weight"].shape == (32, 1, 5, 5)
    assert sd["block1.0.attn.spatial_gating_unit.conv_spatial.weight"].shape == (32, 1, 7, 7)
    assert sd["block1.0.mlp.fc1.weight"].shape == (256, 32, 1, 1)  # mlp ratio 8 in stage 1
    assert sd["block3.0.mlp.fc1.weight"].shape == (640, 160, 1, 1)  # mlp ratio 4 in stage 3
    assert sd["block4.1.layer_scale_1"].shape == (256,)


def test_stage_geometry_matches_the_paper():
    m = create_model("van_b0")
    assert (m.patch_embed1.proj.kernel_size, m.patch_embed1.proj.stride, m.patch_embed1.proj.padding) == ((7, 7), (4, 4), (3, 3))
    assert (m.patch_embed3.proj.kernel_size, m.patch_embed3.proj.stride, m.patch_embed3.proj.padding) == ((3, 3), (2, 2), (1, 1))
    lka = m.block1[0].attn.spatial_gating_unit
    assert lka.conv_spatial.dilation == (3, 3) and lka.conv_spatial.padding == (9, 9)
    assert m.norm4.eps == 1e-6
    feats = m.forward_features(torch.randn(1, 3, 64, 64))
    assert feats.shape == (1, 256, 2, 2)


def test_authors_initialisation():
    torch.manual_seed(0)
    m = create_model("van_b1")
    w = m.block3[0].mlp.fc1.weight              # 1x1 conv 320 -> 1280: fan_out = 1280
    assert abs(w.std().item() - (2 / 1280) ** 0.5) < 0.05 * (2 / 1280) ** 0.5
    w = m.block3[0].attn.spatial_gating_unit.conv_spatial.weight  # depth-wise 7x7: fan_out = 49
    assert abs(w.std().item() - (2 / 49) ** 0.5) < 0.05 * (2 / 49) ** 0.5
    assert torch.all(m.block2[1].layer_scale_1 == 0.01)
    assert abs(m.head.weight.std().item() - 0.02) < 0.002  # trunc-normal, std 0.02
    assert torch.all(m.block1[0].attn.proj_1.bias == 0)


def test_drop_path_rises_linearly_over_all_blocks():
    m = create_model("van_b0", drop_path_rate=0.1)
    rates = [blk.drop_path.p for s in range(1, 5) for blk in getattr(m, f"block{s}")]
    assert len(rates) == 13 and rates[0] == 0.0 and abs(rates[-1] - 0.1) < 1e-9
    steps = [b - a for a, b in zip(rates, rates[1:])]
    assert max(steps) - min(steps) < 1e-9


def test_drop_path_is_active_in_training_only():
    m = create_model("van_mini", num_classes=10, in_chans=1, drop_path_rate=0.5)
    x = torch.randn(8, 1, 28, 28)
    m.eval()
    torch.testing.assert_close(m(x), m(x))
    m.train()
    torch.manual_seed(0)
    a = m(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, m(x))


@pytest.mark.parametrize("name", [n for n in list_models() if n not in EXACT])
@pytest.mark.parametrize("size, chans", [(28, 1), (32, 3)])
def test_small_image_models_run_and_split_features_and_head(name, size, chans):
    if name.endswith("imagenette"):
        size = 160
    kw = {"image_size": size} if model_family(name) == "vit" else {}
    m = create_model(name, num_classes=10, in_chans=chans, **kw).eval()
    x = torch.randn(2, chans, size, size)
    feats = m.forward_features(x)
    assert feats.dim() == 4 and feats.shape[:2] == (2, m.num_features)
    torch.testing.assert_close(m.forward_head(feats), m(x))
    assert m(x).shape == (2, 10)


@pytest.mark.parametrize("preset", sorted(COMPARE_PRESETS))
@pytest.mark.parametrize("chans", [1, 3])
def test_compared_models_match_parameters_within_15_percent(preset, chans):
    van_name, *baselines = COMPARE_PRESETS[preset].models
    with torch.device("meta"):  # counting needs the shapes only
        van = count_params(create_model(van_name, num_classes=10, in_chans=chans))
        counts = {name: count_params(create_model(name, num_classes=10, in_chans=chans)) for name in baselines}
    for name, n in counts.items():
        assert abs(n - van) / van <= 0.15, (name, n, van)


def test_unknown_model_name_lists_the_choices():
    with pytest.raises(VanEduError, match="unknown model 'van_b9'.*van_b0.*vit_mini"):
        create_model("van_b9")


def test_bad_options_and_sizes_are_clear_errors():
    with pytest.raises(VanEduError, match=r"num_classes must be a whole number >= 0 \(0: no head\), got -1"):
        create_model("van_b0", num_classes=-1)
    with pytest.raises(VanEduError, match="in_chans must be a positive whole number"):
        create_model("resnet_mini", in_chans=0)
    with pytest.raises(VanEduError, match="unknown van option.*stem_stride"):
        create_model("van_b0", depth=3)
    m = create_model("van_b0")
    with pytest.raises(VanEduError, match=r"expected images \[B, 3, H, W\].*got shape \[2, 1, 64, 64\]"):
        m(torch.randn(2, 1, 64, 64))
    with pytest.raises(VanEduError, match="28x28 is too small.*at least 32x32.*van_mini"):
        m(torch.randn(1, 3, 28, 28))
    with pytest.raises(VanEduError, match=r"expects images \[B, 1, 28, 28\]"):
        create_model("vit_mini", in_chans=1)(torch.randn(1, 1, 32, 32))
    with pytest.raises(VanEduError, match="in_chans=3"):
        create_model("resnet_mini")(torch.randn(1, 1, 28, 28))
