"""van_edu.explain: Grad-CAM, effective receptive fields and LKA attention maps, on models whose
answer is known in advance. (The bundled trained models they look at: tests/test_bundled.py.)"""
import pytest
import torch
from torch import nn

from van_edu.errors import VanEduError
from van_edu.explain import (
    delete_pixels,
    effective_receptive_field,
    erf_radius,
    grad_cam,
    lka_attention_maps,
    matched_pixels,
    top_pixels,
    upsample_maps,
)


class OneRegion(nn.Module):
    """Two feature channels, each the image seen through a window: channel 0 the top-left 2x2
    quadrant, channel 1 the bottom-right one (zeros elsewhere). Logit 1 is the mean of channel 0,
    logit 0 the mean of channel 1: each logit depends only on one region of the image."""

    def forward_features(self, x):
        top_left = torch.zeros_like(x)
        top_left[..., :2, :2] = 1
        bottom_right = torch.zeros_like(x)
        bottom_right[..., 2:, 2:] = 1
        return torch.cat([x * top_left, x * bottom_right], dim=1)  # [B, 2, 4, 4]

    def forward_head(self, f):
        return f.mean((2, 3)).flip(1)                              # [B, 2]: logit 1 <- channel 0

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def test_grad_cam_peaks_where_the_logit_looks():
    x = torch.rand(3, 1, 4, 4) + 0.1                               # positive features everywhere
    cam = grad_cam(OneRegion(), x, target=1)
    assert cam.shape == (3, 4, 4)
    # the gradient is non-zero on the top-left quadrant only; there the map is A * mean grad > 0
    assert (cam[:, :2, :2] > 0).all() and (cam[:, 2:, :] == 0).all() and (cam[:, :, 2:] == 0).all()
    assert torch.allclose(cam.amax((1, 2)), torch.ones(3))
    other = grad_cam(OneRegion(), x, target=0)
    assert (other[:, 2:, 2:] > 0).all() and (other[:, :2, :] == 0).all()


def test_grad_cam_explains_the_prediction_by_default_and_upsamples():
    x = torch.rand(2, 1, 4, 4) + 0.1
    x[0, 0, :2, :2] += 5                                           # image 0 predicts class 1
    x[1, 0, 2:, 2:] += 5                                           # image 1 predicts class 0
    cam = grad_cam(OneRegion(), x)
    assert cam[0, 0, 0] > 0 and cam[0, 3, 3] == 0
    assert cam[1, 3, 3] > 0 and cam[1, 0, 0] == 0
    big = grad_cam(OneRegion(), x, size=8)
    assert big.shape == (2, 8, 8)
    torch.testing.assert_close(big, upsample_maps(cam, (8, 8)))


def _grad_cam_by_the_definition(model, image, target):
    """Grad-CAM of one image [1, C, H, W] written from Selvaraju et al. (2017), unnormalised: the
    feature map A is computed with the graph from the image kept, the class score y_t is
    back-propagated with ``backward`` into A's ``.grad``, w_c = mean over (i, j) of dy_t/dA_c(i, j),
    and the map is ReLU(sum_c w_c A_c)."""
    features = model.forward_features(image)                      # [1, C, h, w], graph kept
    features.retain_grad()
    score = model.forward_head(features)[0, target]
    score.backward()
    h, w = features.shape[2:]
    maps = torch.zeros(h, w, dtype=features.dtype)
    for c in range(features.shape[1]):                             # one channel at a time
        weight = features.grad[0, c].sum() / (h * w)
        maps += weight * features[0, c].detach()
    return maps.clamp(min=0)


@pytest.mark.parametrize("name", ["van_mini", "resnet_mini"])
def test_grad_cam_equals_the_definition_written_out_on_a_course_model(name):
    from van_edu.models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=1).double().eval()
    x = torch.randn(3, 1, 28, 28, dtype=torch.float64)
    # the split grad_cam relies on: the model is its head applied to its features
    torch.testing.assert_close(model(x), model.forward_head(model.forward_features(x)))
    targets = [7, 2, 7]
    expected = torch.stack([_grad_cam_by_the_definition(model, x[i:i + 1], t) for i, t in enumerate(targets)])
    assert expected.amax((1, 2)).min() > 0, "every reference map has a positive part to compare"
    torch.testing.assert_close(grad_cam(model, x, target=targets, normalize=False), expected)
    # one int explains that class for every image
    same = torch.stack([_grad_cam_by_the_definition(model, x[i:i + 1], 4) for i in range(3)])
    torch.testing.assert_close(grad_cam(model, x, target=4, normalize=False), same)
    # normalised: each map divided by its own maximum
    torch.testing.assert_close(grad_cam(model, x, target=targets), expected / expected.amax((1, 2), keepdim=True))
    # the default explains the predicted class
    predicted = model(x).argmax(1).tolist()
    by_prediction = torch.stack([_grad_cam_by_the_definition(model, x[i:i + 1], t) for i, t in enumerate(predicted)])
    torch.testing.assert_close(grad_cam(model, x, normalize=False), by_prediction)
    # size: bilinear upsampling of the same maps (half-pixel centres, as F.interpolate documents)
    big = grad_cam(model, x, target=targets, normalize=False, size=(28, 28))
    torch.testing.assert_close(big, torch.nn.functional.interpolate(
        expected[:, None], size=(28, 28), mode="bilinear", align_corners=False)[:, 0])


@pytest.mark.parametrize("kernel,dilation", [(3, 1), (5, 1), (3, 2)])
def test_erf_of_one_conv_is_its_kernel_support(kernel, dilation):
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, kernel, dilation=dilation, padding="same").double()
    erf = effective_receptive_field(conv, torch.randn(4, 2, 15, 15, dtype=torch.float64))
    support = erf > 0
    span = dilation * (kernel - 1) + 1
    expected = torch.zeros(15, 15, dtype=torch.bool)
    lo = 7 - span // 2
    expected[lo:lo + span:dilation, lo:lo + span:dilation] = True  # the taps, d apart
    assert torch.equal(support, expected)
    assert erf.max() == 1


def test_erf_of_lka_spans_23_pixels_and_radius_measures_mass():
    from van_edu.lka import LKA

    torch.manual_seed(0)
    erf = effective_receptive_field(LKA(2).double().eval(), torch.randn(2, 2, 31, 31, dtype=torch.float64))
    rows, cols = torch.nonzero(erf > 0, as_tuple=True)
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (23, 23)
    point = torch.zeros(9, 9)
    point[4, 4] = 1
    assert erf_radius(point) == 0
    square = torch.zeros(9, 9)
    square[2:7, 2:7] = 1                                           # 5x5: radius 2 holds all of it
    assert erf_radius(square, mass=1.0, centre=(4, 4)) == 2
    assert erf_radius(square, mass=0.3, centre=(4, 4)) == 1        # 3x3 = 9/25 = 36% of the mass


def test_lka_attention_maps_record_every_block_and_equal_attention_map():
    from van_edu.models import create_model

    torch.manual_seed(0)
    model = create_model("van_mini", num_classes=10, in_chans=1).eval()
    x = torch.randn(2, 1, 28, 28)
    maps = lka_attention_maps(model, x, reduce=None)
    depths = model.config.depths
    assert list(maps) == [f"block{s}.{j}" for s in range(1, len(depths) + 1) for j in range(depths[s - 1])]
    # recompute the first block's attention from its input by hand
    with torch.no_grad():
        u = model.block1[0].attn.activation(model.block1[0].attn.proj_1(
            model.block1[0].norm1(model.patch_embed1(x))))
        torch.testing.assert_close(maps["block1.0"], model.block1[0].attn.spatial_gating_unit.attention_map(u))
    reduced = lka_attention_maps(model, x)
    torch.testing.assert_close(reduced["block2.1"], maps["block2.1"].abs().mean(1))
    assert not any(m._forward_hooks for m in model.modules()), "hooks must be removed"
    with pytest.raises(VanEduError):
        lka_attention_maps(OneRegion(), torch.rand(1, 1, 4, 4))


def test_the_effective_receptive_field_of_an_even_map_is_centred_on_the_image():
    """On an even-sized map the default unit is the middle 2x2: for a symmetric model, the field
    is then symmetric about the image centre (the unit at (h/2, w/2) would sit off-centre)."""
    pool = torch.nn.AvgPool2d(4)                       # 16x16 -> 4x4, each unit sees its own 4x4 block
    erf = effective_receptive_field(pool, torch.randn(2, 1, 16, 16, dtype=torch.float64))
    assert torch.equal(erf, erf.flip(0)) and torch.equal(erf, erf.flip(1))
    assert (erf > 0).nonzero().min(0).values.tolist() == [4, 4] and (erf > 0).nonzero().max(0).values.tolist() == [11, 11]
    one = effective_receptive_field(pool, torch.randn(2, 1, 16, 16, dtype=torch.float64), position=(2, 2))
    assert (one > 0).nonzero().min(0).values.tolist() == [8, 8]


def test_top_pixels_by_hand_with_counts_per_image_and_allowed_pixels():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7], [4.0, 3.0, 2.0, 1.0]])
    assert top_pixels(scores, 2).tolist() == [[False, True, False, True], [True, True, False, False]]
    assert top_pixels(scores, torch.tensor([1, 3])).tolist() == [[False, True, False, False], [True, True, True, False]]
    allowed = torch.tensor([[True, False, True, False], [False, False, True, True]])
    assert top_pixels(scores, 1, allowed).tolist() == [[False, False, True, False], [False, False, True, False]]
    assert top_pixels(torch.zeros(1, 3), 2).tolist() == [[True, True, False]]     # ties: by position
    with pytest.raises(VanEduError, match="fewer allowed pixels"):
        top_pixels(scores, 3, allowed)


def test_matched_pixels_delete_as_many_inside_and_outside_the_region_as_the_map():
    generator = torch.Generator().manual_seed(0)
    saliency = torch.rand(8, 6, 6, generator=generator)
    region = torch.zeros(8, 36, dtype=torch.bool)
    region[:, :20] = True                                        # the "garment": the first 20 pixels
    like = top_pixels(saliency, 9)
    control = matched_pixels(torch.rand(8, 36, generator=generator), like, region)
    assert torch.equal((control & region).sum(1), (like & region).sum(1))
    assert torch.equal((control & ~region).sum(1), (like & ~region).sum(1))
    assert torch.equal(matched_pixels(saliency, like, region), like)  # the map matched to itself is itself
    turned = matched_pixels(saliency.flip(-1, -2), like, region)
    assert torch.equal(turned.sum(1), like.sum(1))


def test_delete_pixels_fills_every_channel_of_the_masked_pixels_only():
    images = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    mask = torch.tensor([[True, False, False, False], [False, False, False, True]])
    out = delete_pixels(images, mask, -1.0)
    assert (out[0, :, 0, 0] == -1).all() and (out[1, :, 1, 1] == -1).all()
    kept = ~mask.reshape(2, 1, 2, 2).expand_as(images)
    assert torch.equal(out[kept], images[kept]) and (out == -1).sum() == 6
