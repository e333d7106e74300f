"""The notebooks' explorers (van_edu.explorers), without a browser.

What a slider calls returns the right figure data: the K/d explorer's taps, Eq. (3), the counts of
the standard and depth-wise convs and the receptive field are van_edu's own (and the paper's for
K = 21, d = 3), the minimum over d is marked where it is; the resolution explorer reads the
measured rows at the chosen side; the 08 explorer shows the chosen image's attention map of the
chosen block and its Grad-CAM. What is displayed degrades to the figure at the default values
without ipywidgets, and with it, moving a control redraws the image.
"""
import base64
import sys

import pytest
import torch
from torch import nn

from van_edu.diagrams import decomposition_taps, marked_cells
from van_edu.errors import VanEduError
from van_edu.explain import grad_cam, lka_attention_maps, upsample_maps
from van_edu.explorers import (
    KD_MAX_DILATION,
    WIDGET_MIME,
    Control,
    Explorer,
    _png,
    draw_inside,
    draw_kd,
    draw_scaling,
    inside_explorer,
    inside_view,
    kd_explorer,
    kd_view,
    scaling_explorer,
    scaling_view,
    widgets_available,
)
from van_edu.lka import best_dilation, conv_params, lka_params, mobilenet_params, receptive_field
from van_edu.models import create_model
from van_edu.scaling import measure_scaling

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --- 03: K and d ---------------------------------------------------------------------------
def test_kd_view_at_the_papers_choice_gives_the_papers_numbers():
    view = kd_view(21, 3, 64)
    assert view["params"] == {"LKA, Eq. (3)": 8832, "depth-wise 21x21 + 1x1": 32320,
                              "standard 21x21 conv": 1806336}          # Table 2, C = 64
    assert view["receptive_field"] == 23 and view["taps"].side == 23
    assert view["best_dilation"] == 3 and view["per_channel"][2] == 74 == min(view["per_channel"])
    assert (view["decomposition"].dw_kernel, view["decomposition"].dwd_kernel) == (5, 7)
    assert "8,832 parameters" in view["text"] and "receptive field 23x23" in view["text"]


@pytest.mark.parametrize("K, d, C", [(21, 3, 64), (7, 2, 32), (35, 5, 160), (3, 1, 8), (49, 12, 64), (28, 1, 16)])
def test_kd_view_is_van_edus_arithmetic(K, d, C):
    view = kd_view(K, d, C)
    assert view["params"] == {"LKA, Eq. (3)": lka_params(K, d, C),
                              f"depth-wise {K}x{K} + 1x1": mobilenet_params(K, C),
                              f"standard {K}x{K} conv": conv_params(K, C)}
    assert view["receptive_field"] == receptive_field(K, d) == view["taps"].side
    assert view["taps"] == decomposition_taps(K, d)
    assert view["dilations"] == list(range(1, min(K, KD_MAX_DILATION) + 1))
    assert view["per_channel"] == [lka_params(K, e, 1) - 1 for e in view["dilations"]]
    best = view["best_dilation"]
    assert best == best_dilation(K) and view["per_channel"][best - 1] == min(view["per_channel"])


def test_kd_view_refuses_a_dilation_above_k():
    with pytest.raises(VanEduError):
        kd_view(5, 6)


@pytest.mark.parametrize("K, d", [(21, 3), (21, 4), (35, 5)])
def test_draw_kd_draws_the_taps_and_marks_the_minimum_and_this_d(K, d):
    view = kd_view(K, d)
    fig = draw_kd(view)
    taps_ax, curve_ax, bars_ax = fig.axes
    taps = decomposition_taps(K, d)
    assert marked_cells(taps_ax) == {"dw": taps.dw, "dwd": taps.dwd, "footprint": taps.footprint}
    stars = [line for line in curve_ax.lines if line.get_marker() == "*"]
    assert len(stars) == 1 and list(stars[0].get_xdata()) == [best_dilation(K)]
    assert list(stars[0].get_ydata()) == [lka_params(K, best_dilation(K), 1) - 1]
    this = [line for line in curve_ax.lines if line.get_label() == f"this d = {d}"]
    assert list(this[0].get_xdata()) == [d] and list(this[0].get_ydata()) == [lka_params(K, d, 1) - 1]
    widths = sorted(p.get_width() for p in bars_ax.patches)
    assert widths == sorted(view["params"].values())
    assert f"receptive field {receptive_field(K, d)}x{receptive_field(K, d)}" in fig._suptitle.get_text()


def test_the_d_slider_offers_at_most_k():
    explorer = kd_explorer()
    d = explorer.controls["dilation"]
    assert d.values({"kernel_size": 5}) == [1, 2, 3, 4, 5]
    assert d.values({"kernel_size": 21}) == list(range(1, KD_MAX_DILATION + 1))
    assert explorer.defaults() == {"kernel_size": 21, "dilation": 3}


# --- What is displayed: with and without ipywidgets ------------------------------------------
def _decoded_png(bundle) -> bytes:
    return base64.b64decode(bundle["image/png"])


def test_without_ipywidgets_the_figure_at_the_defaults_is_displayed(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)            # import ipywidgets now fails
    assert not widgets_available()
    explorer = kd_explorer()
    assert explorer.widget() is None
    bundle = explorer.bundle()
    assert set(bundle) == {"image/png", "text/plain"}
    assert _decoded_png(bundle).startswith(PNG_MAGIC)
    assert bundle["text/plain"] == kd_view(21, 3, 64)["text"]
    assert _decoded_png(bundle) == _png(draw_kd(kd_view(21, 3, 64)))    # the figure at the defaults


def test_with_ipywidgets_the_bundle_adds_the_live_widget_and_moving_it_redraws():
    widgets = pytest.importorskip("ipywidgets", reason="the live explorers need ipywidgets (dev extra)")
    explorer = kd_explorer()
    bundle = explorer.bundle()
    assert set(bundle) == {"image/png", "text/plain", WIDGET_MIME}
    box = explorer.live
    assert isinstance(box, widgets.VBox) and bundle[WIDGET_MIME]["model_id"] == box.model_id
    controls, image, message = box.children
    K, d = controls.children
    assert image.value == _decoded_png(bundle)
    d.value = 4
    assert image.value == _png(draw_kd(kd_view(21, 4, 64))) != _decoded_png(bundle)
    K.value = 3                                     # d's range shrinks to 1..3: d is clamped, then drawn
    assert (d.max, d.value) == (3, 3)
    assert image.value == _png(draw_kd(kd_view(3, 3, 64)))
    assert message.value == ""


def test_an_error_in_a_view_is_shown_not_raised():
    widgets = pytest.importorskip("ipywidgets", reason="the live explorers need ipywidgets (dev extra)")

    def render(n):
        if n == 2:
            raise VanEduError("two is refused")
        return draw_kd(kd_view(21, n)), "ok"

    box = Explorer(render, {"n": Control("n", [1, 2, 3], 1)}).widget()
    controls, image, message = box.children
    before = image.value
    controls.children[0].value = 2
    assert "two is refused" in message.value and image.value == before
    assert isinstance(controls.children[0], widgets.IntSlider)


# --- 04: from the measured rows --------------------------------------------------------------
@pytest.fixture(scope="module")
def rows():
    """Real rows of measure_scaling on two tiny modules (no FLOP counting), three sides."""
    modules = {"conv": nn.Conv2d(4, 4, 3, padding=1), "twice": nn.Sequential(nn.Conv2d(4, 4, 3, padding=1),
                                                                              nn.Conv2d(4, 4, 3, padding=1))}
    return measure_scaling(modules, (4, 8, 6), channels=4, repeats=1, count_flops_too=False, threads=1)


def test_scaling_view_reads_the_measured_rows_at_the_side(rows):
    view = scaling_view(rows, 6)
    expected = {r["method"]: {"seconds": r["seconds"], "peak_bytes": r["peak_bytes"]} for r in rows if r["size"] == 6}
    assert view["at"] == expected and set(expected) == {"conv", "twice"}
    assert view["pixels"] == 36
    assert view["curves"]["conv"]["pixels"] == [16, 36, 64]                # in order of size
    assert view["curves"]["twice"]["seconds"] == [next(r["seconds"] for r in rows if r["method"] == "twice"
                                                       and r["size"] == s) for s in (4, 6, 8)]
    assert f"{1e3 * expected['conv']['seconds']:.2f} ms" in view["text"]
    with pytest.raises(VanEduError, match="measured sides are \\[4, 6, 8\\]"):
        scaling_view(rows, 5)


def test_draw_scaling_marks_the_chosen_side(rows):
    view = scaling_view(rows, 8)
    time_ax, memory_ax = draw_scaling(view).axes
    circles = [line for line in time_ax.lines if line.get_marker() == "o" and len(line.get_xdata()) == 1]
    assert sorted(float(line.get_ydata()[0]) for line in circles) == sorted(
        1e3 * v["seconds"] for v in view["at"].values())
    assert all(list(line.get_xdata()) == [64] for line in circles)
    explorer = scaling_explorer(rows)
    assert explorer.defaults() == {"side": 8} and explorer.controls["side"].values({}) == [4, 6, 8]


# --- 08: attention map and Grad-CAM of one image ----------------------------------------------
@pytest.fixture(scope="module")
def inside():
    torch.manual_seed(0)
    models = {"van_mini": create_model("van_mini", num_classes=10, in_chans=1).eval(),
              "resnet_mini": create_model("resnet_mini", num_classes=10, in_chans=1).eval()}
    images = torch.randn(3, 1, 28, 28)
    return models, images, ["a", "b", "c"]


def test_inside_view_is_the_chosen_images_map_and_grad_cam(inside):
    models, images, names = inside
    van = models["van_mini"]
    view = inside_view(models, images, names, image=1, model="van_mini", block="block2.0")
    batch = lka_attention_maps(van, images)                          # all three images at once
    torch.testing.assert_close(view["attention"], batch["block2.0"][1])
    torch.testing.assert_close(view["attention_shown"], upsample_maps(batch["block2.0"], 28)[1])
    torch.testing.assert_close(view["cam"], grad_cam(van, images, size=28)[1])
    assert view["predicted"] == int(van(images).argmax(1)[1])
    assert view["block"] == "block2.0" and view["name"] == "b" and view["image"].shape == (1, 28, 28)
    assert not torch.allclose(view["attention"], batch["block2.0"][0])   # another image, another map
    default = inside_view(models, images, names)
    assert default["block"] == list(batch)[-1]


def test_inside_view_of_a_model_without_lka(inside):
    models, images, names = inside
    view = inside_view(models, images, names, image=2, model="resnet_mini", block="block2.0",
                       classes=[f"c{i}" for i in range(10)])
    assert view["attention"] is None and "no LKA in resnet_mini" in view["text"]
    torch.testing.assert_close(view["cam"], grad_cam(models["resnet_mini"], images[2:3], size=28)[0])
    assert view["predicted_name"] == f"c{view['predicted']}"
    assert len(draw_inside(view).axes) == 3


def test_inside_view_refuses_what_is_not_there(inside):
    models, images, names = inside
    with pytest.raises(VanEduError, match="no block"):
        inside_view(models, images, names, model="van_mini", block="block9.9")
    with pytest.raises(VanEduError, match="no model"):
        inside_view(models, images, names, model="vit_mini")
    with pytest.raises(VanEduError, match="image must be"):
        inside_view(models, images, names, image=3)


def test_inside_explorer_offers_the_images_models_and_blocks(inside, monkeypatch):
    models, images, names = inside
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    explorer = inside_explorer(models, images, names)
    assert explorer.controls["image"].values({}) == [0, 1, 2]
    assert explorer.controls["model"].values({}) == ["van_mini", "resnet_mini"]
    assert explorer.controls["block"].values({}) == list(lka_attention_maps(models["van_mini"], images[:1]))
    bundle = explorer.bundle()
    assert bundle["text/plain"] == inside_view(models, images, names, 0, "van_mini", "block3.1")["text"]
