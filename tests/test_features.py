"""Pyramid features from every model (timm's ``features_only`` convention)."""
import pytest
import torch

from van_edu.errors import VanEduError
from van_edu.models import create_model


@pytest.mark.parametrize("name, shape, reductions, chans", [
    ("van_b0", (2, 3, 64, 64), [4, 8, 16, 32], [32, 64, 160, 256]),
    ("van_mini", (2, 1, 64, 64), [2, 4, 8], [32, 64, 128]),
    ("resnet_mini", (2, 1, 64, 64), [2, 4, 8], [32, 64, 128]),
    ("resnet_imagenette", (2, 3, 64, 64), [4, 8, 16, 32], [36, 72, 144, 288]),
    ("vit_mini", (2, 1, 64, 64), [1, 2, 4, 8], [32, 64, 128, 128]),
])
def test_feature_info_says_what_each_map_is(name, shape, reductions, chans):
    kw = {"image_size": shape[-1]} if name.startswith("vit") else {}
    m = create_model(name, in_chans=shape[1], features_only=True, **kw).eval()
    with torch.no_grad():
        maps = m(torch.randn(shape))
    assert [f["reduction"] for f in m.feature_info] == reductions
    assert [f["num_chs"] for f in m.feature_info] == chans
    assert [tuple(t.shape) for t in maps] == [(shape[0], c, shape[-1] // r, shape[-1] // r)
                                              for c, r in zip(chans, reductions)]
    assert not any(k.startswith("head") for k in m.state_dict())        # no head


def test_van_levels_are_the_stages_after_their_norms():
    torch.manual_seed(0)
    clf = create_model("van_b0").eval()
    backbone = create_model("van_b0", features_only=True, out_indices=(1, -1)).eval()
    backbone.load_state_dict({k: v for k, v in clf.state_dict().items() if not k.startswith("head")})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want, h = [], x
        for s in range(1, 5):
            h = clf.forward_stage(h, s)
            want.append(h)
        got = backbone(x)
    assert [f["index"] for f in backbone.feature_info] == [1, 3]
    torch.testing.assert_close(got[0], want[1])
    torch.testing.assert_close(got[1], want[3])


def test_vit_simple_pyramid_builds_only_the_levels_asked_for():
    full = create_model("vit_mini", in_chans=1, image_size=64, features_only=True)
    part = create_model("vit_mini", in_chans=1, image_size=64, features_only=True, out_indices=(1, 2, 3))
    assert hasattr(full.simple_pyramid, "up4") and not hasattr(part.simple_pyramid, "up4")
    x = torch.randn(2, 1, 64, 64, requires_grad=True)
    sum(t.sum() for t in part(x)).backward()
    unused = [n for n, p in part.named_parameters() if p.grad is None]
    assert not unused, unused                                            # DDP needs every parameter used
    with torch.no_grad():
        last = part.forward_features(x)
        torch.testing.assert_close(part(x)[2], torch.nn.functional.max_pool2d(last, 2))


def test_bad_feature_requests_are_clear_errors():
    with pytest.raises(VanEduError, match=r"out_indices must be level indices in -3..2 .*got \(0, 3\)"):
        create_model("van_mini", features_only=True, out_indices=(0, 3))
    with pytest.raises(VanEduError, match="each level once, finest first"):
        create_model("van_mini", features_only=True, out_indices=(2, 1))
    with pytest.raises(VanEduError, match="out_indices is for features_only=True"):
        create_model("van_mini", out_indices=(0,))
