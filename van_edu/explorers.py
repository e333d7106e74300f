"""Interactive explorers: a figure with sliders and menus, shown by one line in a notebook.

Three explorers, one per notebook that has an idea worth moving by hand:

* ``kd_explorer`` (notebook 03): sliders for K and d; LKA's taps on the pixel grid
  (``van_edu.diagrams``), Eq. (3) per channel against d with the minimum over d marked, Eq. (3)'s
  count against the standard and the depth-wise K x K convs, and the receptive field;
* ``scaling_explorer`` (notebook 04): a slider over the resolutions the notebook measured; the
  time and peak memory of each module at that size, read from the measured rows (nothing is
  re-timed when the slider moves);
* ``inside_explorer`` (notebook 08): a test image, a model and a VAN block; the block's LKA
  attention map and the model's Grad-CAM beside the image (``van_edu.explain``).

Each is a pure function that returns the figure's data for given control values (``kd_view``,
``scaling_view``, ``inside_view``: tested without a browser), a drawing of that data on a
matplotlib ``Figure`` that pyplot never sees (``draw_kd``, ...: no stray figure is ever shown by
the inline backend after a slider moves), and an ``Explorer`` that ties the controls to them.

How an explorer degrades (the design choice). An ``Explorer`` displays ONE output, a
``display_data`` whose MIME bundle holds three representations of the same thing:

* ``application/vnd.jupyter.widget-view+json``: the live widget (the controls over an image),
  present only when ``ipywidgets`` imports in the kernel;
* ``image/png``: the figure at the default values;
* ``text/plain``: one line that states what the figure shows at the default values.

A front end shows the richest representation it can render. JupyterLab (and Colab) with a widget
manager render the widget; everything else falls back to the PNG, with no code of ours deciding:

* the committed notebooks: ``tools/notebooks.py execute`` drops the widget view and the widget
  state from every output (``clean``), so what is committed is the PNG and the text, and no
  widget state (``tests/test_notebooks_meta.py`` checks both);
* the book (``make book``, MyST-NB) renders the committed PNG like any other figure;
* nbval compares neither ``image/png`` nor the widget view (its ``skip_compare`` holds both:
  random model ids, pixel-level noise), only ``text/plain``; that line is deterministic in 03,
  so 03's explorer cell carries ``# NBVAL_CHECK_OUTPUT`` and nbval checks it whether or not
  ``ipywidgets`` is installed;
* a kernel without ``ipywidgets`` (``tests/test_colab.py``'s fresh environment) displays the same
  bundle without the widget view.

The display goes out as ``display_data`` (through ``_ipython_display_``), as ipywidgets 7 itself
displays a widget: Colab's ipywidgets is 7.x, and its front end renders core widgets (sliders,
menus, images: all an explorer uses) from such a message.

Why not ``ipywidgets.interact`` with the figure drawn into an ``Output`` widget: its output lives
inside the widget's state, so with the widget view dropped (the committed notebooks, the book) no
figure would be left, and pyplot figures drawn in callbacks pile up in pyplot's registry.
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import matplotlib
import torch
from matplotlib.figure import Figure

from .diagrams import decomposition_taps, draw_decomposition
from .errors import VanEduError
from .explain import grad_cam, lka_attention_maps, upsample_maps
from .lka import LKA, best_dilation, conv_params, decomposition, lka_params, mobilenet_params, receptive_field
from .viz import _to_image

__all__ = ["Control", "Explorer", "widgets_available", "KD_KERNEL_SIZES", "KD_MAX_DILATION", "kd_view", "draw_kd",
           "kd_explorer", "scaling_view", "draw_scaling", "scaling_explorer", "inside_view", "draw_inside",
           "inside_explorer"]

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
_DPI = 80


# --- The explorer: controls, a figure, and what is displayed -----------------------------------
@dataclass(frozen=True)
class Control:
    """One control of an explorer: a ``label``, the ``options`` it offers and its default ``value``.

    ``options``: the values in order (a slider over them), or ``(text, value)`` pairs (a menu);
    for a slider it may also be a function of the other controls' values that returns them (d's
    range depends on K). ``kind`` is ``"slider"`` or ``"menu"``.
    """

    label: str
    options: Sequence | Callable[[dict], Sequence]
    value: Any
    kind: str = "slider"

    def values(self, current: dict) -> list:
        """The values this control offers given the current values of all controls."""
        options = self.options(current) if callable(self.options) else self.options
        return [o[1] if self.kind == "menu" else o for o in options]


def widgets_available() -> bool:
    """Whether ``ipywidgets`` imports here (the explorers then display a live widget too)."""
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


class Explorer:
    """A figure that controls redraw: ``render(**values)`` returns ``(Figure, text)``.

    Shown by IPython (the last line of a cell, or ``display``) as one output: the live widget when
    ``ipywidgets`` is there, and always the figure and the text at the default values (module
    docstring). ``static()`` is that fallback; ``widget()`` builds the live widget.
    """

    def __init__(self, render: Callable[..., tuple[Figure, str]], controls: dict[str, Control]):
        self.render = render
        self.controls = controls
        self.live = None          # the widget last displayed (None before, or without ipywidgets)

    def defaults(self) -> dict:
        return {name: c.value for name, c in self.controls.items()}

    def static(self, values: dict | None = None) -> dict:
        """The MIME bundle of the figure at ``values`` (default: the defaults): PNG and text."""
        fig, text = self.render(**(values or self.defaults()))
        return {"image/png": base64.b64encode(_png(fig)).decode("ascii"), "text/plain": text}

    def widget(self, first: dict | None = None):
        """The live widget (controls over the figure's image), or None without ``ipywidgets``.

        ``first``: the static bundle at the defaults, when already drawn (not drawn twice).
        """
        if not widgets_available():
            return None
        import ipywidgets as w

        first = first or self.static()
        inputs = {}
        for name, c in self.controls.items():
            style = {"description_width": "initial"}
            if c.kind == "menu":
                inputs[name] = w.Dropdown(options=list(c.options), value=c.value, description=c.label, style=style)
            else:
                options = c.values(self.defaults())
                if options == list(range(options[0], options[-1] + 1)):
                    inputs[name] = w.IntSlider(value=c.value, min=options[0], max=options[-1], description=c.label,
                                               continuous_update=False, style=style)
                else:
                    inputs[name] = w.SelectionSlider(options=options, value=c.value, description=c.label,
                                                     continuous_update=False, style=style)
        image = w.Image(value=base64.b64decode(first["image/png"]), format="png")
        message = w.HTML()
        busy = []

        def update(_change=None):
            if busy:
                return
            busy.append(True)
            try:
                values = {n: i.value for n, i in inputs.items()}
                for name, c in self.controls.items():
                    if callable(c.options) and isinstance(inputs[name], w.IntSlider):
                        allowed = c.values(values)
                        inputs[name].max = allowed[-1]       # clamps the value if it was above
                        inputs[name].min = allowed[0]
                values = {n: i.value for n, i in inputs.items()}
                try:
                    fig, _ = self.render(**values)
                except VanEduError as err:
                    message.value = f"<b>{type(err).__name__}</b>: {err}"
                    return
                message.value = ""
                image.value = _png(fig)
            finally:
                busy.clear()

        for i in inputs.values():
            i.observe(update, names="value")
        return w.VBox([w.HBox(list(inputs.values()), layout=w.Layout(flex_flow="row wrap")), image, message])

    def bundle(self) -> dict:
        """What is displayed: the static bundle, plus the widget's view when ipywidgets is there."""
        data = self.static()
        self.live = self.widget(first=data)
        if self.live is not None:   # the view ipywidgets 7 and 8 both send for a widget
            data[WIDGET_MIME] = {"version_major": 2, "version_minor": 0, "model_id": self.live.model_id}
        return data

    def _ipython_display_(self):
        from IPython.display import display

        display(self.bundle(), raw=True)


# --- 03: K and d ---------------------------------------------------------------------------
KD_KERNEL_SIZES = range(3, 50)   # the K slider
KD_MAX_DILATION = 12             # the d slider goes up to min(K, 12)


def _dilations(kernel_size: int) -> list[int]:
    return list(range(1, min(kernel_size, KD_MAX_DILATION) + 1))


def kd_view(kernel_size: int = 21, dilation: int = 3, channels: int = 64) -> dict:
    """What the K/d explorer draws for K, d and C, all computed by ``van_edu.lka``/``diagrams``.

    Keys: ``decomposition``, ``taps`` (``diagrams.decomposition_taps``), ``dilations`` and
    ``per_channel`` (Eq. (3)'s depth-wise bracket ceil(K/d)^2 + (2d-1)^2 for each d the slider
    offers), ``best_dilation`` (the minimum over d), ``params`` (Eq. (3) at C, the standard K x K
    conv, the depth-wise K x K + 1 x 1 split), ``receptive_field`` (side, pixels) and ``text``.
    """
    dec = decomposition(kernel_size, dilation)                # checks K and d
    dilations = _dilations(kernel_size)
    best = best_dilation(kernel_size)
    params = {"LKA, Eq. (3)": lka_params(kernel_size, dilation, channels),
              f"depth-wise {kernel_size}x{kernel_size} + 1x1": mobilenet_params(kernel_size, channels),
              f"standard {kernel_size}x{kernel_size} conv": conv_params(kernel_size, channels)}
    field = receptive_field(kernel_size, dilation)
    per_channel = [lka_params(kernel_size, d, 1) - 1 for d in dilations]
    text = (f"K = {kernel_size}, d = {dilation}: a {dec.dw_kernel}x{dec.dw_kernel} DW-Conv and a "
            f"{dec.dwd_kernel}x{dec.dwd_kernel} DW-D-Conv with dilation {dilation}, receptive field {field}x{field}; "
            f"Eq. (3) at C = {channels}: {params['LKA, Eq. (3)']:,} parameters against "
            f"{params[f'standard {kernel_size}x{kernel_size} conv']:,} (standard conv) and "
            f"{params[f'depth-wise {kernel_size}x{kernel_size} + 1x1']:,} (depth-wise + 1x1); "
            f"fewest depth-wise weights at d = {best} ({lka_params(kernel_size, best, 1) - 1} per channel, "
            f"{lka_params(kernel_size, dilation, 1) - 1} at d = {dilation})")
    return {"kernel_size": kernel_size, "dilation": dilation, "channels": channels, "decomposition": dec,
            "taps": decomposition_taps(kernel_size, dilation), "dilations": dilations, "per_channel": per_channel,
            "best_dilation": best, "params": params, "receptive_field": field, "text": text}


def draw_kd(view: dict) -> Figure:
    """The K/d explorer's figure for a ``kd_view``: taps on the grid, Eq. (3) against d, the counts."""
    K, d = view["kernel_size"], view["dilation"]
    fig = Figure(figsize=(10.5, 4.3), dpi=_DPI)
    grid = fig.add_gridspec(1, 3, width_ratios=(1.2, 1, 0.85), left=0.06, right=0.98, top=0.85, bottom=0.29,
                            wspace=0.55)
    taps_ax, curve_ax, bars_ax = (fig.add_subplot(grid[0, i]) for i in range(3))
    draw_decomposition(K, d, ax=taps_ax)

    curve_ax.plot(view["dilations"], view["per_channel"], marker="o", ms=3, color="tab:blue",
                  label="ceil(K/d)^2 + (2d-1)^2")
    best = view["best_dilation"]
    curve_ax.plot([best], [view["per_channel"][best - 1]], marker="*", ms=13, color="tab:red", ls="none",
                  label=f"minimum over d: d = {best}")
    curve_ax.plot([d], [view["per_channel"][d - 1]], marker="o", ms=9, mfc="none", mec="black", mew=1.5,
                  ls="none", label=f"this d = {d}")
    curve_ax.set_yscale("log")
    curve_ax.set_xticks(view["dilations"])
    curve_ax.set_title(f"Eq. (3) per channel for K = {K}", fontsize=9)
    curve_ax.set_xlabel("dilation d", fontsize=8)
    curve_ax.set_ylabel("depth-wise weights per channel (log)", fontsize=8)
    curve_ax.legend(fontsize=7, loc="upper center")
    curve_ax.tick_params(labelsize=7)

    names, counts = list(view["params"]), list(view["params"].values())
    bars = bars_ax.barh([n.replace(" ", "\n", 1) for n in names], counts, color=["tab:red", "tab:orange", "tab:gray"])
    for bar, n in zip(bars, counts):
        bars_ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {n:,}", va="center", fontsize=7)
    bars_ax.set_xscale("log")
    bars_ax.set_xlim(min(counts) / 3, max(counts) * 40)
    bars_ax.invert_yaxis()
    bars_ax.set_title(f"parameters at C = {view['channels']} (biases aside)", fontsize=9)
    bars_ax.set_xlabel("parameters (log scale)", fontsize=8)
    bars_ax.tick_params(labelsize=7)
    field = view["receptive_field"]
    fig.suptitle(f"K = {K}, d = {d}: receptive field {field}x{field}, "
                 f"{view['params']['LKA, Eq. (3)']:,} parameters at C = {view['channels']}", fontsize=10)
    return fig


def kd_explorer(kernel_size: int = 21, dilation: int = 3, channels: int = 64) -> Explorer:
    """Notebook 03's explorer: sliders for K and d (d up to min(K, 12)) over ``draw_kd(kd_view(...))``."""
    kd_view(kernel_size, dilation, channels)                  # checks the defaults before any widget

    def render(kernel_size, dilation):
        view = kd_view(kernel_size, dilation, channels)
        return draw_kd(view), view["text"]

    return Explorer(render, {
        "kernel_size": Control("kernel size K", list(KD_KERNEL_SIZES), kernel_size),
        "dilation": Control("dilation d", lambda v: _dilations(v["kernel_size"]), dilation),
    })


# --- 04: cost against resolution, from measured rows ----------------------------------------
def _sides(rows: list[dict]) -> list[int]:
    return sorted({r["size"] for r in rows})


def scaling_view(rows: list[dict], side: int) -> dict:
    """Time and peak memory of each module at ``side``, read from ``scaling.measure_scaling``'s rows.

    Only the measured sides exist (no re-timing, no interpolation). Keys: ``side``, ``pixels``,
    ``at`` (method -> {"seconds", "peak_bytes"} at that side), ``curves`` (method -> the measured
    pixels, seconds and peak bytes, in order of size), ``memory_kind`` and ``text``.
    """
    if side not in _sides(rows):
        raise VanEduError(f"side {side} was not measured; the measured sides are {_sides(rows)}")
    curves: dict[str, dict[str, list]] = {}
    for r in sorted(rows, key=lambda r: r["size"]):
        curve = curves.setdefault(r["method"], {"pixels": [], "seconds": [], "peak_bytes": []})
        for key in curve:
            curve[key].append(r[key])
    at = {r["method"]: {"seconds": r["seconds"], "peak_bytes": r["peak_bytes"]} for r in rows if r["size"] == side}
    text = f"at {side}x{side} ({side * side:,} pixels): " + "; ".join(
        f"{m} {1e3 * v['seconds']:.2f} ms, {v['peak_bytes'] / 2**20:.3f} MiB" for m, v in at.items())
    return {"side": side, "pixels": side * side, "at": at, "curves": curves,
            "memory_kind": rows[0].get("memory_kind", ""), "text": text}


def draw_scaling(view: dict) -> Figure:
    """Time and peak memory against pixels (log-log), the measured curves, ``view``'s side marked."""
    fig = Figure(figsize=(9.5, 3.9), dpi=_DPI)
    axes = fig.subplots(1, 2)
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key, label, scale, unit in ((axes[0], "seconds", "time per forward pass (ms, log)", 1e3, "{:.2f} ms"),
                                        (axes[1], "peak_bytes", "peak memory (MiB, log)", 2.0 ** -20, "{:.3f} MiB")):
        for i, (method, curve) in enumerate(view["curves"].items()):
            colour = colours[i % len(colours)]
            value = scale * view["at"][method][key]
            ax.plot(curve["pixels"], [scale * v for v in curve[key]], marker="o", ms=3, color=colour,
                    label=f"{method}: {unit.format(value)}")
            ax.plot([view["pixels"]], [value], marker="o", ms=9, mfc="none", mec=colour, mew=1.5)
        ax.axvline(view["pixels"], color="0.4", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("pixels per map, H x W (log scale)", fontsize=8)
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, title=f"at {view['side']}x{view['side']}", title_fontsize=7)
    axes[0].set_title("time", fontsize=9)
    axes[1].set_title(f"peak memory ({view['memory_kind']})" if view["memory_kind"] else "peak memory", fontsize=8)
    side = view["side"]
    fig.suptitle(f"Measured cost against resolution; circled: {side}x{side} = {view['pixels']:,} pixels", fontsize=10)
    fig.tight_layout()
    return fig


def scaling_explorer(rows: list[dict], side: int | None = None) -> Explorer:
    """Notebook 04's explorer: a slider over the measured sides (default: the largest)."""
    sides = _sides(rows)
    side = sides[-1] if side is None else side
    scaling_view(rows, side)

    def render(side):
        view = scaling_view(rows, side)
        return draw_scaling(view), view["text"]

    return Explorer(render, {"side": Control("side of the map (pixels)", sides, side)})


# --- 08: attention maps and Grad-CAM of a test image ----------------------------------------
def _has_lka(model) -> bool:
    return any(isinstance(m, LKA) for m in model.modules())


def inside_view(models: dict, images, names: Sequence[str], image: int = 0, model: str = "van_mini",
                block: str | None = None, classes: Sequence[str] | None = None) -> dict:
    """LKA attention map and Grad-CAM of one test image, by ``van_edu.explain``.

    ``models``: name -> trained model (evaluation mode); ``images``: ``[N, C, H, W]``; ``names``:
    a title per image; ``classes``: the class names (else classes are shown by index). ``block``: a
    VAN block as ``lka_attention_maps`` names it (``"block3.1"``; default: the last). Keys: ``image`` (``[C, H, W]``), ``attention`` (the block's mean |A| over
    channels, ``[h, w]`` as LKA computed it, or None for a model without LKA), ``attention_shown``
    (upsampled to ``[H, W]``), ``cam`` (Grad-CAM of the predicted class, upsampled to ``[H, W]``),
    ``predicted`` (class index), ``predicted_name``, ``block``, ``model``, ``name`` and ``text``.
    """
    if model not in models:
        raise VanEduError(f"no model {model!r}; the models are {list(models)}")
    if not 0 <= image < len(images):
        raise VanEduError(f"image must be 0..{len(images) - 1}, got {image}")
    net = models[model]
    x = images[image:image + 1]                               # [1, C, H, W]
    size = tuple(x.shape[-2:])
    attention = shown = None
    if _has_lka(net):
        maps = lka_attention_maps(net, x)                     # block -> [1, h, w]
        block = list(maps)[-1] if block is None else block
        if block not in maps:
            raise VanEduError(f"{model} has no block {block!r}; its LKA blocks are {list(maps)}")
        attention = maps[block][0]
        shown = upsample_maps(maps[block], size)[0]
    cam = grad_cam(net, x, size=size)[0]                      # [H, W], of the predicted class
    with torch.no_grad():
        predicted = int(net(x).argmax(1))
    predicted_name = classes[predicted] if classes is not None else f"class {predicted}"
    where = (f"LKA attention of {block} (a {attention.shape[0]}x{attention.shape[1]} map)" if attention is not None
             else f"no LKA in {model}")
    text = f"image {image} ({names[image]}): {model} predicts {predicted_name}; {where}; Grad-CAM of that class"
    return {"image": x[0], "attention": attention, "attention_shown": shown, "cam": cam, "predicted": predicted,
            "predicted_name": predicted_name, "block": block if attention is not None else None, "model": model, "name": names[image], "text": text}


def draw_inside(view: dict) -> Figure:
    """The image, its LKA attention map over it and its Grad-CAM over it (red = high)."""
    import numpy as np

    fig = Figure(figsize=(7.2, 2.9), dpi=_DPI)
    axes = fig.subplots(1, 3)
    base = _to_image(view["image"])
    grey = base if base.ndim == 2 else base.mean(-1)
    axes[0].imshow(base, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title(f"test image: {view['name']}", fontsize=8)
    size = "" if view["attention"] is None else f" ({view['attention'].shape[0]}x{view['attention'].shape[1]})"
    for ax, key, title in ((axes[1], "attention_shown", f"{view['block']}{size}: mean |LKA attention|"),
                           (axes[2], "cam", "Grad-CAM of the predicted class")):
        ax.imshow(grey, cmap="gray", vmin=0, vmax=1)
        m = view[key]
        if m is None:
            ax.text(0.5, 0.5, f"{view['model']} has no LKA", ha="center", va="center", fontsize=8,
                    transform=ax.transAxes, color="white", backgroundcolor="0.2")
            ax.set_title("LKA attention", fontsize=8)
            continue
        a = np.asarray(m.detach().cpu(), dtype=float)
        a = (a - a.min()) / max(a.max() - a.min(), 1e-12)     # [0, 1] for display, as notebook 08 does
        ax.imshow(a, cmap="jet", vmin=0, vmax=1, alpha=0.5)
        ax.set_title(title, fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    fig.suptitle(f"{view['model']} predicts: {view['predicted_name']}  (red = high)", fontsize=9)
    fig.tight_layout()
    return fig


def inside_explorer(models: dict, images, names: Sequence[str], classes: Sequence[str] | None = None,
                    image: int = 0, model: str | None = None, block: str | None = None) -> Explorer:
    """Notebook 08's explorer: menus for the test image, the model and the VAN block.

    ``classes`` names the predicted class (the data set's class names). The block menu lists the
    LKA blocks of the first model that has any (the default model).
    """
    vans = [n for n, m in models.items() if _has_lka(m)]
    if not vans:
        raise VanEduError("inside_explorer needs at least one model with LKA (a VAN)")
    model = vans[0] if model is None else model
    blocks = list(lka_attention_maps(models[vans[0]], images[:1]))
    block = blocks[-1] if block is None else block
    inside_view(models, images, names, image, model, block, classes)

    def render(image, model, block):
        view = inside_view(models, images, names, image, model, block, classes)
        return draw_inside(view), view["text"]

    return Explorer(render, {
        "image": Control("test image", [(f"{i}: {n}", i) for i, n in enumerate(names)], image, "menu"),
        "model": Control("model", [(n, n) for n in models], model, "menu"),
        "block": Control("VAN block", [(b, b) for b in blocks], block, "menu"),
    })
