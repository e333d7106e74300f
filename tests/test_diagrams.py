"""van_edu.diagrams: the drawings mark what the code computes.

The grid is read back from the drawn image and compared with the taps of the real convolutions
(found from gradients, independently of ``decomposition_taps``); the stage and block drawings are
compared with a real forward pass and the real block's layers.
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from van_edu import diagrams  # noqa: E402
from van_edu.lka import LKA, decomposition, receptive_field  # noqa: E402
from van_edu.models import create_model  # noqa: E402
from van_edu.models.van import Block  # noqa: E402

CASES = [(21, 3), (14, 2), (28, 4), (35, 5), (7, 2), (24, 3)]   # (24, 3): an even-span dilated kernel


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _read_offsets(module: nn.Module, size: int = 61) -> frozenset:
    """Input offsets from the centre output that reach it, from gradients (positive weights, so
    nothing cancels)."""
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(1.0)
    x = torch.ones(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    module(x)[0, 0, size // 2, size // 2].backward()
    rows, cols = torch.nonzero(x.grad[0, 0], as_tuple=True)
    return frozenset((int(r) - size // 2, int(c) - size // 2) for r, c in zip(rows, cols))


@pytest.mark.parametrize("K,d", CASES)
def test_taps_are_those_the_real_convolutions_read(K, d):
    taps = diagrams.decomposition_taps(K, d)
    lka = LKA(1, K, d, impl="plain")
    assert taps.dw == _read_offsets(lka.conv0)
    assert taps.dwd == _read_offsets(lka.conv_spatial)
    assert taps.footprint == _read_offsets(nn.Sequential(lka.conv0, lka.conv_spatial))
    dec = decomposition(K, d)
    assert len(taps.dw) == dec.dw_kernel ** 2 and len(taps.dwd) == dec.dwd_kernel ** 2
    assert taps.side == receptive_field(K, d)
    assert len(taps.footprint) == receptive_field(K, d) ** 2          # no holes


@pytest.mark.parametrize("K,d", CASES)
def test_grid_drawing_marks_exactly_the_taps(K, d):
    fig = diagrams.draw_decomposition(K, d)
    ax = fig.axes[0]
    drawn = diagrams.marked_cells(ax)
    taps = diagrams.decomposition_taps(K, d)
    assert drawn["dw"] == taps.dw
    assert drawn["dwd"] == taps.dwd
    assert drawn["footprint"] == taps.footprint
    side = receptive_field(K, d)
    assert f"{side}x{side}" in ax.get_title() and f"K={K}, d={d}" in ax.get_title()
    dec = decomposition(K, d)
    assert f"{dec.dw_kernel}x{dec.dw_kernel} DW-Conv" in ax.get_title()
    assert f"{dec.dwd_kernel}x{dec.dwd_kernel} DW-D-Conv" in ax.get_title()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"footprint of the two: {side}x{side}" in legend


@pytest.mark.parametrize("K,d", [(21, 3), (14, 2), (24, 3)])
def test_outlined_square_is_the_dense_kernel_it_replaces(K, d):
    fig = diagrams.draw_decomposition(K, d)
    (square,) = [p for p in fig.axes[0].patches if p.get_width() == K]
    x0, y0 = square.get_xy()
    outlined = frozenset((r, c) for r in range(round(y0 + 0.5), round(y0 + 0.5) + K)
                         for c in range(round(x0 + 0.5), round(x0 + 0.5) + K))
    assert outlined == _read_offsets(LKA(1, K, d, variant="dense").conv_dense)


def test_grid_drawing_accepts_an_axes():
    fig, axes = plt.subplots(1, 2)
    assert diagrams.draw_decomposition(21, 2, ax=axes[0]) is fig
    assert diagrams.marked_cells(axes[0])["dwd"] == diagrams.decomposition_taps(21, 2).dwd


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_lka_drawing_reads_the_module():
    texts = _texts(diagrams.draw_lka_module(LKA(4, 14, 2)))
    assert "conv0\n3x3 DW-Conv" in texts
    assert "conv_spatial\n7x7 DW-D-Conv\nd=2" in texts
    assert "conv1\n1x1 conv" in texts
    assert any("\u2297" in t for t in texts)
    default = _texts(diagrams.draw_lka_module())
    assert "conv0\n5x5 DW-Conv" in default and "conv_spatial\n7x7 DW-D-Conv\nd=3" in default


def test_block_layers_in_the_order_the_block_runs_them():
    names = [n for n, _ in diagrams.block_layers(Block(8, 4, kernel_size=14, dilation=2))]
    assert names == ["norm1", "attn.proj_1", "attn.activation", "attn.spatial_gating_unit", "attn.proj_2",
                     "norm2", "mlp.fc1", "mlp.dwconv.dwconv", "mlp.act", "mlp.fc2"]


@pytest.mark.parametrize("name", ["van_b0", "van_mini"])
def test_block_drawing_names_each_layer_of_the_real_block(name):
    block = create_model(name).block1[0]
    c, hidden = block.norm1.num_features, block.mlp.fc1.out_channels
    texts = _texts(diagrams.draw_van_block(block))
    boxes = [t for t in texts if "\n" in t or t == "+"]
    expected = ["norm1\nBatchNorm", f"proj_1\n1x1 {c}\u2192{c}", "activation\nGELU",
                "spatial_\ngating_unit\nLKA K=21, d=3", f"proj_2\n1x1 {c}\u2192{c}", "+",
                "\u00d7\nlayer_scale_1\n(per channel)", "+",
                "norm2\nBatchNorm", f"fc1\n1x1 {c}\u2192{hidden}", "dwconv\n3x3 DW-Conv", "act\nGELU",
                f"fc2\n1x1 {hidden}\u2192{c}", "\u00d7\nlayer_scale_2\n(per channel)", "+"]
    assert [t for t in boxes if not t.startswith("x")] == expected
    assert any("residual" in t for t in texts) and any("shortcut" in t for t in texts)


def test_block_drawing_follows_the_block_it_is_given():
    texts = _texts(diagrams.draw_van_block(Block(16, 2, kernel_size=14, dilation=2)))
    assert "spatial_\ngating_unit\nLKA K=14, d=2" in texts and "fc1\n1x1 16\u219232" in texts


def _real_stages(name, size):
    """(H, W, C) after each stage, from a real forward pass on the CPU."""
    model = create_model(name).eval()
    x = torch.randn(1, model.config.in_chans, size, size)
    out = []
    with torch.no_grad():
        for s in range(1, model.num_stages + 1):
            x = model.forward_stage(x, s)
            out.append((x.shape[2], x.shape[3], x.shape[1]))
    return out, model.config.depths


def _conv_arithmetic_stages(name, size):
    """(H, W, C) after each stage from each patch embedding's conv: floor((H + 2p - k) / s) + 1."""
    with torch.device("meta"):
        model = create_model(name)
    out = []
    for s in range(1, model.num_stages + 1):
        proj = getattr(model, f"patch_embed{s}").proj
        size = (size + 2 * proj.padding[0] - proj.kernel_size[0]) // proj.stride[0] + 1
        out.append((size, size, proj.out_channels))
    return out, model.config.depths


def _check_stage_labels(name, size, shapes, depths):
    texts = [t for t in _texts(diagrams.draw_stages(name, size)) if t.startswith("stage")]
    assert len(texts) == len(shapes)
    for s, (text, (h, w, c), n) in enumerate(zip(texts, shapes, depths), start=1):
        lines = text.split("\n")
        assert lines[0] == f"stage {s}"
        assert lines[2] == f"{n} blocks"
        assert lines[3] == f"{h}\u00d7{w}\u00d7{c}"
    assert [(r["height"], r["width"], r["channels"]) for r in diagrams.stage_shapes(name, size)] == shapes


@pytest.mark.parametrize("name,size", [("van_mini", 28), ("van_b0", 64)])
def test_stage_drawing_labels_are_the_shapes_of_a_real_forward(name, size):
    _check_stage_labels(name, size, *_real_stages(name, size))


@pytest.mark.parametrize("name,size", [("van_b0", 224), ("van_mini", 28), ("van_cifar", 32)])
def test_stage_drawing_labels_follow_the_patch_embeddings(name, size):
    shapes, depths = _conv_arithmetic_stages(name, size)
    if (name, size) == ("van_b0", 224):
        assert shapes == [(56, 56, 32), (28, 28, 64), (14, 14, 160), (7, 7, 256)]   # the paper's B0
    _check_stage_labels(name, size, shapes, depths)
