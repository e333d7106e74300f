"""Drawings of the architecture's ideas: the LKA taps on a pixel grid, the LKA module, the VAN
block and the stages.

Every label is read from the code it draws (``van_edu.lka.decomposition``, a built ``LKA``, a
model's block, a pass of a model on the meta device), so a drawing cannot drift from the code.
matplotlib only; each function returns the Figure, and the drawn marks can be read back
(``marked_cells``, the texts of the axes) so that tests check the picture, not a side list.
"""
from __future__ import annotations

from dataclasses import dataclass

import matplotlib

if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline", "nbagg", "widget"):
    matplotlib.use("Agg")  # files, not windows, outside notebooks
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import FancyBboxPatch, Patch, Rectangle  # noqa: E402
from torch import nn  # noqa: E402

from .lka import LKA, decomposition, same_padding  # noqa: E402
from .models import create_model  # noqa: E402

__all__ = ["Taps", "decomposition_taps", "draw_decomposition", "marked_cells", "GRID_CLASSES",
           "block_layers", "draw_lka_module", "draw_van_block", "stage_shapes", "draw_stages"]


# --- The decomposition on a pixel grid -------------------------------------------------------
@dataclass(frozen=True)
class Taps:
    """The input offsets (row, col) from an output pixel that each part of LKA reads.

    ``dw``: the (2d-1) x (2d-1) DW-Conv; ``dwd``: the ceil(K/d) x ceil(K/d) DW-D-Conv, d apart;
    ``footprint``: DW-Conv then DW-D-Conv (their Minkowski sum; the 1x1 conv adds no offset).
    """

    kernel_size: int
    dilation: int
    dw: frozenset
    dwd: frozenset
    footprint: frozenset

    @property
    def side(self) -> int:
        """Side of the footprint's bounding square, in pixels."""
        rows = [r for r, _ in self.footprint]
        return max(rows) - min(rows) + 1


def _kernel_offsets(kernel: int, dilation: int) -> list[int]:
    """Offsets read along one axis by a stride-1 conv that keeps the size.

    Tap j reads j * dilation - p, with p the padding before the image (``same_padding``: the
    symmetric padding, or the smaller side when PyTorch's ``padding="same"`` is used).
    """
    before = same_padding(kernel, dilation)
    return [j * dilation - before for j in range(kernel)]


def _square(offsets: list[int]) -> frozenset:
    return frozenset((r, c) for r in offsets for c in offsets)


def decomposition_taps(kernel_size: int = 21, dilation: int = 3) -> Taps:
    """The taps of ``van_edu.lka.decomposition(K, d)``: DW-Conv, DW-D-Conv and their composition.

    Computed from the kernel sizes and the dilation the decomposition returns; the composed
    footprint is every sum of a DW-Conv offset and a DW-D-Conv offset.
    """
    dec = decomposition(kernel_size, dilation)
    dw = _square(_kernel_offsets(dec.dw_kernel, 1))
    dwd = _square(_kernel_offsets(dec.dwd_kernel, dec.dilation))
    footprint = frozenset((r1 + r2, c1 + c2) for r1, c1 in dw for r2, c2 in dwd)
    return Taps(kernel_size, dilation, dw, dwd, footprint)


# Cell classes of the grid image, in drawing order: later classes are drawn over earlier ones.
GRID_CLASSES = ("outside", "footprint", "DW-D-Conv tap", "DW-Conv tap", "both")
_GRID_COLOURS = ("white", "#c6dbef", "#fd8d3c", "#2171b5", "#6a3d9a")


def draw_decomposition(kernel_size: int = 21, dilation: int = 3, ax=None):
    """The LKA decomposition of a K x K kernel on a pixel grid, centred on one output pixel.

    Cells: the DW-Conv taps, the DW-D-Conv's dilated taps, the pixels their composition reaches
    (footprint) and, outlined in red, the K x K square the decomposition replaces; a cross marks
    the output pixel. Returns the Figure (the one holding ``ax`` when given: several panels side by
    side then get a compact title and legend). ``marked_cells(ax)`` reads the marked cells back
    from the drawn image.
    """
    taps = decomposition_taps(kernel_size, dilation)
    dec = decomposition(kernel_size, dilation)
    rows = [r for r, _ in taps.footprint]
    lo, hi = min(rows) - 1, max(rows) + 1            # one empty pixel of margin
    n = hi - lo + 1
    grid = np.zeros((n, n), dtype=int)
    for cells, value in ((taps.footprint, 1), (taps.dwd, 2), (taps.dw, 3), (taps.dw & taps.dwd, 4)):
        for r, c in cells:
            grid[r - lo, c - lo] = value
    alone = ax is None
    if alone:
        fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    fig = ax.figure
    ax.imshow(grid, cmap=ListedColormap(_GRID_COLOURS), vmin=-0.5, vmax=len(GRID_CLASSES) - 0.5,
              extent=(lo - 0.5, hi + 0.5, hi + 0.5, lo - 0.5), interpolation="nearest")
    ax.set_xticks(np.arange(lo, hi + 2) - 0.5, minor=True)
    ax.set_yticks(np.arange(lo, hi + 2) - 0.5, minor=True)
    ax.grid(which="minor", color="0.8", lw=0.4)
    ax.grid(which="major", visible=False)
    ax.tick_params(which="minor", length=0)
    k_lo = -same_padding(kernel_size)                # the K x K conv's first offset ("same" padding)
    ax.add_patch(Rectangle((k_lo - 0.5, k_lo - 0.5), kernel_size, kernel_size, fill=False, ec="red", lw=1.5,
                           label=f"the {kernel_size}x{kernel_size} kernel it replaces"))
    ax.plot([0], [0], marker="x", color="white", ms=5, mew=1.2, ls="none")
    side = taps.side
    handles = [Patch(fc=_GRID_COLOURS[3], label=f"{dec.dw_kernel}x{dec.dw_kernel} DW-Conv taps"),
               Patch(fc=_GRID_COLOURS[2], label=f"{dec.dwd_kernel}x{dec.dwd_kernel} DW-D-Conv taps (dilation {dilation})"),
               Patch(fc=_GRID_COLOURS[4], label="tap of both (the centre)"),
               Patch(fc=_GRID_COLOURS[1], label=f"footprint of the two: {side}x{side}"),
               Patch(fc="none", ec="red", label=f"the {kernel_size}x{kernel_size} kernel it replaces")]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.1 if alone else -0.14),
              ncol=2 if alone else 1, fontsize=7 if alone else 6.5, frameon=False)
    ax.set_title(f"K={kernel_size}, d={dilation}: {dec.dw_kernel}x{dec.dw_kernel} DW-Conv, "
                 f"{dec.dwd_kernel}x{dec.dwd_kernel} DW-D-Conv{' ' if alone else chr(10)}"
                 f"-> {side}x{side} field", fontsize=9 if alone else 8)
    ax.set_xlabel("column offset from the output pixel (pixels)" if alone else "column offset (pixels)",
                  fontsize=8 if alone else 7)
    ax.set_ylabel("row offset (pixels)", fontsize=8 if alone else 7)
    ax.tick_params(labelsize=7 if alone else 6)
    if alone:
        fig.tight_layout()
    return fig


def marked_cells(ax) -> dict[str, frozenset]:
    """Read the grid ``draw_decomposition`` drew on ``ax`` back: class name -> set of (row, col).

    Offsets are recovered from the image's extent, so this checks the picture itself. "DW-Conv
    tap" and "DW-D-Conv tap" include the cells drawn as "both".
    """
    image = ax.images[0]
    grid = np.asarray(image.get_array())
    left, _, _, top = image.get_extent()
    c0, r0 = int(round(left + 0.5)), int(round(top + 0.5))
    cells = {name: set() for name in GRID_CLASSES[1:]}
    for (i, j), value in np.ndenumerate(grid):
        if value:
            cells[GRID_CLASSES[value]].add((i + r0, j + c0))
    both = cells["both"]
    dw, dwd = cells["DW-Conv tap"] | both, cells["DW-D-Conv tap"] | both
    return {"dw": frozenset(dw), "dwd": frozenset(dwd),
            "footprint": frozenset(cells["footprint"]) | dw | dwd}


# --- Box-and-arrow diagrams ------------------------------------------------------------------
_FILL = {"conv": "#deebf7", "dw": "#c6dbef", "act": "#fee6ce", "norm": "#e5f5e0", "op": "#f2f2f2",
         "lka": "#fdd0a2", "io": "white"}


def _box(ax, x, y, text, kind="conv", w=0.9, h=0.62, fontsize=7):
    """A rounded box centred at (x, y) with ``text``; returns its centre and half-width."""
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                fc=_FILL[kind], ec="0.3", lw=0.8))
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize)
    return x, w / 2


def _arrow(ax, start, end, bend=0.0, text=None):
    """An arrow from ``start`` to ``end`` (data coordinates); ``bend`` curves it (residuals)."""
    ax.annotate("", xy=end, xytext=start,
                arrowprops=dict(arrowstyle="-|>", color="0.25", lw=0.9, shrinkA=0, shrinkB=0,
                                connectionstyle=f"arc3,rad={bend}"))
    if text:
        ax.text((start[0] + end[0]) / 2, max(start[1], end[1]) + 0.62, text, ha="center", fontsize=6.5,
                color="0.3")


def _chain(ax, y, items, x0=0.6, dx=1.08, fontsize=7):
    """Boxes ``items`` = [(text, kind), ...] in a row at height ``y``, joined by arrows.

    A one-character item (a sum or product sign) gets a narrow box. Returns the x centres.
    """
    xs, half = [], []
    for text, kind in items:
        w = 0.5 if len(text) <= 2 else 0.9
        x = x0 + len(xs) * dx
        _box(ax, x, y, text, kind, w=w, fontsize=fontsize)
        if xs:
            _arrow(ax, (xs[-1] + half[-1], y), (x - w / 2, y))
        xs.append(x)
        half.append(w / 2)
    return xs


def _skip(ax, x_from, x_to, y, height, text):
    """A shortcut drawn as a bracket above the row, from ``x_from`` down into ``x_to``."""
    top = y + height
    ax.plot([x_from, x_from, x_to], [y + 0.31, top, top], color="0.45", lw=0.9)
    _arrow(ax, (x_to, top), (x_to, y + 0.31 if abs(height) > 0 else y))
    ax.text((x_from + x_to) / 2, top + 0.06, text, ha="center", va="bottom", fontsize=6.5, color="0.3")


def _blank(ax, width, height):
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")


def _conv_text(conv: nn.Conv2d, name: str) -> str:
    """'5x5 DW-Conv' style label of a conv read from the module itself."""
    k = conv.kernel_size[0]
    dil = conv.dilation[0]
    if conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1:
        kind = "DW-D-Conv" if dil > 1 else "DW-Conv"
    else:
        kind = "conv"
    text = f"{name}\n{k}x{k} {kind}"
    if dil > 1:
        text += f"\nd={dil}"
    return text


def draw_lka_module(lka: LKA | None = None):
    """LKA as boxes and arrows: input F -> DW-Conv -> DW-D-Conv -> 1x1 -> attention, times F.

    The kernel sizes, dilation and layer names are read from ``lka`` (a built ``van_edu.lka.LKA``;
    by default ``LKA(8)``, the paper's K = 21, d = 3).
    """
    lka = LKA(8) if lka is None else lka
    dec = lka.decomp
    items = [("input F\n[B, C, H, W]", "io")]
    items += [(_conv_text(conv, name), "dw") for name, conv in
              (("conv0", getattr(lka, "conv0", None)), ("conv_spatial", getattr(lka, "conv_spatial", None)))
              if conv is not None]
    if hasattr(lka, "conv1"):
        items.append((_conv_text(lka.conv1, "conv1"), "conv"))
    items += [("attention\nA", "lka"), ("\u2297", "op"), ("output\nA \u2297 F", "io")]
    fig, ax = plt.subplots(figsize=(7.2, 2.2), dpi=100)
    xs = _chain(ax, 0.7, items)
    _skip(ax, xs[0], xs[-2], 0.7, 0.75, "F itself (the product gates the input)")
    _blank(ax, xs[-1] + 0.6, 2.0)
    ax.set_title(f"Large kernel attention, K={dec.kernel_size}, d={dec.dilation}: "
                 "A = conv1(conv_spatial(conv0(F))), output = A \u2297 F", fontsize=9)
    fig.tight_layout()
    return fig


def block_layers(block: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers a VAN block calls, in the order it calls them, as (name, module).

    Found by running the block on a small input (where its parameters are; on the meta device
    nothing is computed) with a hook on every leaf module; an LKA counts as one layer, dropout
    and drop path are left out (they change nothing at evaluation).
    """
    names = {m: n for n, m in block.named_modules()}
    lkas = [m for m in block.modules() if isinstance(m, LKA)]
    inside_lka = {id(m) for lka in lkas for m in lka.modules() if m is not lka}
    units = lkas + [m for m in block.modules() if not list(m.children()) and id(m) not in inside_lka
                    and not isinstance(m, (nn.Dropout, nn.Identity)) and type(m).__name__ != "DropPath"]
    order = []
    handles = [m.register_forward_hook(lambda mod, i, o: order.append(mod)) for m in units]
    dim = block.norm1.num_features
    try:
        with torch.no_grad():
            block(torch.zeros(1, dim, 8, 8, device=next(block.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    return [(names[m], m) for m in order]


def _wrap(name: str, width: int = 12) -> str:
    """A layer name broken after underscores into lines of at most ``width`` characters."""
    lines = [""]
    for part in name.replace("_", "_ ").split(" "):
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append("")
        lines[-1] += part
    return "\n".join(lines)


def _layer_text(name: str, m: nn.Module) -> tuple[str, str]:
    """(label, kind) of one block layer, read from the module."""
    short = name.split(".")[-1]
    if isinstance(m, LKA):
        d = m.decomp
        return f"{_wrap(short)}\nLKA K={d.kernel_size}, d={d.dilation}", "lka"
    if isinstance(m, nn.Conv2d):
        k = m.kernel_size[0]
        if m.groups > 1:
            return f"{short}\n{k}x{k} DW-Conv", "dw"
        return f"{short}\n{k}x{k} {m.in_channels}\u2192{m.out_channels}", "conv"
    if isinstance(m, nn.BatchNorm2d):
        return f"{short}\nBatchNorm", "norm"
    return f"{short}\n{type(m).__name__}", "act"


def _default_block(name: str = "van_b0", stage: int = 1) -> nn.Module:
    """The first block of stage ``stage`` of ``create_model(name)``, built on the meta device."""
    with torch.device("meta"):
        model = create_model(name)
    return model.stages[stage - 1].blocks[0]


def draw_van_block(block: nn.Module | None = None):
    """A VAN block as boxes and arrows, its layers named and ordered as the block runs them.

    Top row, the attention sub-layer: norm1 -> proj_1 -> GELU -> LKA -> proj_2, plus the
    attention module's own shortcut, times layer_scale_1, plus the block's input (residual).
    Bottom row, the feed-forward sub-layer: norm2 -> fc1 -> 3x3 DW-Conv -> GELU -> fc2, times
    layer_scale_2, plus its input. By default the first block of van_b0 (built on the meta device).
    """
    block = _default_block() if block is None else block
    layers = block_layers(block)
    attn = [(n, m) for n, m in layers if n == "norm1" or n.startswith("attn.")]
    mlp = [(n, m) for n, m in layers if n == "norm2" or n.startswith("mlp.")]
    dim = block.norm1.num_features
    fig, ax = plt.subplots(figsize=(7.5, 3.6), dpi=100)
    rows = ((2.55, attn, "layer_scale_1", "attn"), (0.75, mlp, "layer_scale_2", "mlp"))
    width = 0
    for y, part, scale, sub in rows:
        start = "x" if sub == "attn" else "x (after the\nattention\nsub-layer)"
        items = [(f"{start}\n[B, {dim}, H, W]", "io")] + [_layer_text(n, m) for n, m in part]
        if sub == "attn":
            items.append(("+", "op"))
        items += [(f"\u00d7\n{scale}\n(per channel)", "op"), ("+", "op")]
        xs = _chain(ax, y, items, dx=0.98, fontsize=6)
        if sub == "attn":   # Attention adds its own input, the normalised x, to proj_2's output
            _skip(ax, xs[1], xs[-3], y, 0.55, "attn's shortcut (normalised x)")
        _skip(ax, xs[0], xs[-1], y, 0.95, "residual (the block's x)")
        width = max(width, xs[-1] + 0.6)
    _blank(ax, width, 3.95)
    ax.text(0.1, 3.85, "attention sub-layer", fontsize=7.5, weight="bold", va="top")
    ax.text(0.1, 2.05, "feed-forward sub-layer", fontsize=7.5, weight="bold", va="top")
    ax.set_title(f"One VAN block ({dim} channels): layers in the order the block runs them", fontsize=9)
    fig.tight_layout()
    return fig


# --- The stages ------------------------------------------------------------------------------
def stage_shapes(name: str = "van_b0", image_size: int = 224) -> list[dict]:
    """Per stage of ``create_model(name)``: its patch embedding, depth and output shape.

    The model is built and run on the meta device (shapes only, nothing computed). Each row has
    ``stage``, ``kernel``, ``stride``, ``blocks``, ``channels``, ``height``, ``width``.
    """
    with torch.device("meta"):
        model = create_model(name)
    x = torch.empty(1, model.config.in_chans, image_size, image_size, device="meta")
    rows = []
    with torch.no_grad():
        for s, stage in enumerate(model.stages, start=1):
            x = stage(x)
            proj = stage.patch_embed.proj
            rows.append({"stage": s, "kernel": proj.kernel_size[0], "stride": proj.stride[0],
                         "blocks": len(stage.blocks), "channels": x.shape[1],
                         "height": x.shape[2], "width": x.shape[3]})
    return rows


def draw_stages(name: str = "van_b0", image_size: int = 224):
    """The stages of a VAN as boxes: patch embedding, blocks, output resolution and channels.

    Every number comes from ``stage_shapes(name, image_size)``, i.e. from the built model.
    """
    rows = stage_shapes(name, image_size)
    items = [(f"image\n{image_size}\u00d7{image_size}", "io")]
    for r in rows:
        items.append((f"stage {r['stage']}\nembed {r['kernel']}x{r['kernel']}/{r['stride']}\n"
                      f"{r['blocks']} blocks\n{r['height']}\u00d7{r['width']}\u00d7{r['channels']}", "lka"))
    items.append(("pool +\nlinear\nhead", "conv"))
    fig, ax = plt.subplots(figsize=(6.5, 1.9), dpi=100)
    xs = []
    for i, (text, kind) in enumerate(items):
        x = 0.7 + i * 1.3
        _box(ax, x, 0.75, text, kind, w=1.05, h=1.1)
        if xs:
            _arrow(ax, (xs[-1] + 0.525, 0.75), (x - 0.525, 0.75))
        xs.append(x)
    _blank(ax, xs[-1] + 0.7, 1.5)
    ax.set_title(f"{name} on a {image_size}\u00d7{image_size} input: each stage's patch embedding "
                 "(kernel/stride), blocks and output H\u00d7W\u00d7C", fontsize=8.5)
    fig.tight_layout()
    return fig
