"""van_edu.viz: the plots show what they claim (values, error bars, boxes, whole epochs) and carry
a title and labelled axes, the course's habit for every figure."""
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from van_edu import viz


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _runs():
    history = [{"epoch": 1, "test_accuracy": 0.8}, {"epoch": 2, "test_accuracy": 0.9}]
    return [{"model": "van_mini", "family": "van", "test_accuracy": a, "params": 600_000,
             "images_per_second": 400, "history": history} for a in (0.90, 0.92)] + [
            {"model": "resnet_mini", "family": "resnet", "test_accuracy": 0.89, "params": 700_000,
             "images_per_second": 1000, "history": history}]


def _labelled(ax):
    return bool(ax.get_title() and ax.get_xlabel() and ax.get_ylabel())


def test_learning_curves_plot_percent_against_whole_epochs():
    fig = viz.plot_learning_curves(_runs(), "curves")
    ax = fig.axes[0]
    assert _labelled(ax)
    lines = ax.get_lines()
    assert [list(line.get_ydata()) for line in lines][0] == pytest.approx([80.0, 90.0])
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks      # no "epoch 1.2"
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["resnet_mini", "van_mini"]


def test_tradeoff_plots_the_seed_mean_with_the_standard_deviation_as_error_bar():
    fig = viz.plot_tradeoff(_runs(), "params", "parameters", "size")
    ax = fig.axes[0]
    assert _labelled(ax) and ax.get_xscale() == "log"
    van = ax.containers[0]                                        # the first model's errorbar
    (x,), (y,) = van.lines[0].get_data()
    assert (x, y) == pytest.approx((600_000, 91.0))
    segment = van.lines[2][0].get_segments()[0]                   # the vertical error bar
    assert segment[:, 1] == pytest.approx([91.0 - np.sqrt(2.0), 91.0 + np.sqrt(2.0)])


def test_maps_draw_each_box_centred_with_its_side():
    fig = viz.plot_maps([np.zeros((41, 41)), np.ones((41, 41))], ["a", "b"], "maps", boxes=[None, 23])
    first, second = [ax for ax in fig.axes if ax.get_title() in ("a", "b")]
    assert not first.patches and len(second.patches) == 1
    box = second.patches[0]
    assert (box.get_width(), box.get_height()) == (23, 23)
    assert box.get_x() + 23 / 2 == pytest.approx(20.0)            # centred on pixel 20 of 41
    assert fig.get_suptitle() == "maps" and first.get_xlabel() and first.get_ylabel()


def test_history_has_loss_and_accuracy_panels_with_train_and_test():
    history = [{"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 0.5 + 0.1 * e,
                "test_loss": 0.9 / e, "test_accuracy": 0.6 + 0.1 * e} for e in (1, 2, 3)]
    fig = viz.plot_history(history, "curves")
    loss, accuracy = fig.axes
    assert _labelled(loss) and _labelled(accuracy)
    assert [len(ax.get_lines()) for ax in (loss, accuracy)] == [2, 2]
    assert list(accuracy.get_lines()[1].get_ydata()) == pytest.approx([70.0, 80.0, 90.0])
    assert list(loss.get_xticks()) == [1, 2, 3]


def test_scaling_plot_has_one_line_per_method_and_slope_guides_through_the_lowest_start():
    from van_edu.viz import plot_scaling

    rows = [{"method": m, "pixels": n, "seconds": c * n ** p} for m, c, p in (("a", 2.0, 1), ("b", 1.0, 2))
            for n in (16, 64, 256)]
    fig = plot_scaling(rows, slopes={"a": 1.0, "b": 2.0})
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    assert set(lines) == {"a (slope 1.00)", "b (slope 2.00)", "slope 1 (guide)", "slope 2 (guide)"}
    guide = lines["slope 2 (guide)"]
    assert list(guide.get_xdata()) == [16, 64, 256]
    # from the lower first point (a's, 2 * 16), rising as n^2 over the 16x range of pixels
    assert guide.get_ydata()[0] == 32.0 and guide.get_ydata()[-1] == 32.0 * 16 ** 2
    assert fig.axes[0].get_xscale() == "log"
    assert not plot_scaling(rows, guides=False).axes[0].get_lines()[-1].get_label().endswith("(guide)")


def test_ablation_plots_differences_with_error_bars_beside_the_paper_on_one_axis():
    names = ["no_dw_conv", "add", "sigmoid"]
    differences, errors, paper = [-1.5, 0.25, -0.5], [0.5, 1.0, 0.75], [-0.5, -0.8, None]
    fig = viz.plot_ablation(names, differences, errors, paper, "ablation")
    assert len(fig.axes) == 1                                     # one axis, no twin
    ax = fig.axes[0]
    assert _labelled(ax) and "points" in ax.get_ylabel()
    here = ax.containers[0]
    xs, ys = here.lines[0].get_data()
    assert list(ys) == pytest.approx(differences)
    segments = here.lines[2][0].get_segments()                   # the vertical error bars
    bars = np.array([seg[:, 1] for seg in segments])
    assert bars == pytest.approx(np.array([[d - e, d + e] for d, e in zip(differences, errors)]))
    paper_line = [line for line in ax.get_lines() if line.get_marker() == "s"][0]
    px, py = paper_line.get_data()
    assert list(py[:2]) == pytest.approx(paper[:2]) and np.isnan(py[2])
    assert list(px) == pytest.approx(list(np.asarray(xs) + 0.2))  # beside each measured point
    zero = [line for line in ax.get_lines() if list(line.get_ydata()) == [0.0, 0.0]]
    assert zero                                                   # the "same as the baseline" line
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert len(ax.get_legend().get_texts()) == 2 and not ax.patches  # no band unless asked


def test_ablation_band_shades_plus_minus_the_given_points_around_zero():
    fig = viz.plot_ablation(["add"], [-1.0], [0.5], [-0.8], "ablation", band=1.25)
    (band,) = fig.axes[0].patches
    assert (band.get_y(), band.get_y() + band.get_height()) == pytest.approx((-1.25, 1.25))
    assert len(fig.axes[0].get_legend().get_texts()) == 3


def test_ablation_draws_a_second_asymmetric_interval_around_the_same_difference():
    fig = viz.plot_ablation(["add", "sigmoid"], [-1.0, 2.0], [0.5, 0.5], [-0.8, -0.2], "ablation",
                            intervals=[(-1.5, -0.25), (1.0, 4.0)])
    ax = fig.axes[0]
    seeds, paired = ax.containers[0], ax.containers[1]
    xs, ys = paired.lines[0].get_data()
    assert list(ys) == pytest.approx([-1.0, 2.0]) and list(xs) == pytest.approx([0.0, 1.0])
    bars = np.array([seg[:, 1] for seg in paired.lines[2][0].get_segments()])
    assert bars == pytest.approx(np.array([[-1.5, -0.25], [1.0, 4.0]]))
    assert list(seeds.lines[0].get_data()[0]) == pytest.approx([-0.1, 0.9])
    assert len(ax.get_legend().get_texts()) == 3


def test_deletion_curves_one_panel_per_model_accuracy_against_the_percent_deleted():
    curves = {"van_mini": {"Grad-CAM": [90.0, 70.0, 50.0], "random": [90.0, 80.0, 60.0]},
              "resnet_mini": {"Grad-CAM": [89.0, 60.0, 40.0], "random": [89.0, 75.0, 65.0]}}
    bands = {"van_mini": {"random": ([90.0, 78.0, 58.0], [90.0, 82.0, 62.0])}}
    fig = viz.plot_deletion_curves([0.0, 0.1, 0.2], curves, "deletion", bands=bands)
    axes = [ax for ax in fig.axes]
    assert [ax.get_title() for ax in axes] == ["van_mini", "resnet_mini"] and fig._suptitle.get_text() == "deletion"
    assert axes[0].get_ylabel() and all(ax.get_xlabel() for ax in axes) and "%" in axes[0].get_xlabel()
    for ax, lines in zip(axes, curves.values()):
        drawn = {line.get_label(): line.get_data() for line in ax.get_lines()}
        for label, accuracy in lines.items():
            assert list(drawn[label][0]) == pytest.approx([0.0, 10.0, 20.0])
            assert list(drawn[label][1]) == pytest.approx(accuracy)
    (shade,) = axes[0].collections                               # one band, on the panel that has it
    ys = shade.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(58.0) and ys.max() == pytest.approx(90.0) and not axes[1].collections


def test_history_skips_the_epochs_that_were_not_tested():
    history = [{"epoch": e, "train_loss": 1.0 / e, "train_accuracy": 0.5, "test_loss": t, "test_accuracy": a}
               for e, t, a in ((1, None, None), (2, 0.4, 0.8), (3, None, None), (4, 0.3, 0.9))]
    fig = viz.plot_history(history, "curves")
    test_line = next(line for line in fig.axes[1].get_lines() if line.get_label() == "test")
    assert list(test_line.get_xdata()) == [2, 4] and list(test_line.get_ydata()) == [80.0, 90.0]


def test_roofline_draws_both_ceilings_each_operator_and_each_step():
    peak, bandwidth = 100e9, 10e9                                  # the ridge at 10 FLOP/byte
    ops = [{"op": "aten::mm", "flops": 2e9, "bytes": 1e8, "intensity": 20.0, "measured_s": 0.04},
           {"op": "aten::gelu", "flops": 1e7, "bytes": 8e7, "intensity": 0.125, "measured_s": 0.02}]
    steps = {"van_mini": {"operators": ops, "flops": 2.01e9, "bytes": 1.8e8, "measured_s": 0.06}}
    fig = viz.plot_roofline(steps, peak, bandwidth, "roofline")
    ax = fig.axes[0]
    assert _labelled(ax) and ax.get_xscale() == ax.get_yscale() == "log"
    ceiling = next(line for line in ax.get_lines() if line.get_label().startswith("ceilings"))
    x, y = np.asarray(ceiling.get_xdata()), np.asarray(ceiling.get_ydata())
    assert np.allclose(y, np.minimum(peak, bandwidth * x))          # memory slope, then the flat peak
    dots, star = ax.collections[0], ax.collections[1]
    assert np.allclose(dots.get_offsets(), [[20.0, 5e10], [0.125, 5e8]])   # intensity, FLOPs / seconds
    assert dots.get_sizes()[0] > dots.get_sizes()[1]                  # area by time: mm took longer
    assert np.allclose(star.get_offsets(), [[2.01e9 / 1.8e8, 2.01e9 / 0.06]])


def test_a_figure_is_described_by_its_own_titles_axes_and_legends():
    from van_edu.notebook import describe_figure

    fig, (a, b) = plt.subplots(1, 2)
    fig.suptitle("Two models")
    a.plot([1, 2], label="van_mini")
    a.plot([2, 1], label="resnet_mini")
    a.legend()
    a.set(title="accuracy", xlabel="epoch", ylabel="test accuracy (%)")
    b.imshow(np.zeros((3, 3)))
    assert describe_figure(fig) == ('Figure: "Two models". Plot 1: "accuracy"; x: epoch; y: test accuracy (%); '
                                    'legend: van_mini, resnet_mini. Plot 2: an image.')


@pytest.mark.slow
def test_a_notebook_stores_each_figure_with_its_description_on_a_white_face():
    """In a real kernel (the inline backend, which drops Figure's formatters as it starts): after
    ``setup()``, a figure's output holds its description as text and an opaque white PNG."""
    import base64
    import io

    import nbformat
    from nbclient import NotebookClient
    from PIL import Image

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("from van_edu.notebook import setup\n_ = setup(verbose=False)"),
        nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\n"
                                  "ax.plot([1, 2])\nax.set(title='loss', xlabel='step');")])
    NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    (out,) = [o for o in nb.cells[1].outputs if "image/png" in o.get("data", {})]
    assert out["data"]["text/plain"] == 'Figure. Plot 1: "loss"; x: step.'
    image = Image.open(io.BytesIO(base64.b64decode(out["data"]["image/png"]))).convert("RGBA")
    assert image.getpixel((0, 0)) == (255, 255, 255, 255)


def test_every_committed_figure_is_opaque_so_it_reads_in_a_dark_theme():
    import base64
    import io
    import json
    from pathlib import Path

    from PIL import Image

    seen = 0
    for path in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
            for out in cell.get("outputs", []):
                if "image/png" in out.get("data", {}):
                    image = Image.open(io.BytesIO(base64.b64decode(out["data"]["image/png"]))).convert("RGBA")
                    corners = [image.getpixel(p) for p in ((0, 0), (image.width - 1, image.height - 1))]
                    assert all(c[3] == 255 for c in corners), f"{path.name} cell {i}: a transparent figure"
                    seen += 1
    assert seen >= 40


def test_confusion_plot_colours_row_shares_labels_counts_and_has_a_white_face():
    # Five images of three classes, worked by hand:   true  a a b b c
    #                                                  pred  a b b b a
    # rows (true) -> a: 1 a, 1 b; b: 2 b; c: 1 a.  Row shares: a 50/50/0, b 0/100/0, c 100/0/0.
    from van_edu.metrics import confusion_matrix

    confusion = confusion_matrix(torch.tensor([0, 1, 1, 1, 0]), torch.tensor([0, 0, 1, 1, 2]), 3)
    assert confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    fig = viz.plot_confusion(confusion, ["a", "b", "c"], "confusion")
    ax = fig.axes[0]
    assert _labelled(ax) and ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert np.asarray(ax.get_images()[0].get_array()) == pytest.approx(
        np.array([[50, 50, 0], [0, 100, 0], [100, 0, 0]]))
    texts = {(t.get_position(), t.get_text()) for t in ax.texts}
    assert texts == {((0, 0), "1"), ((1, 0), "1"), ((1, 1), "2"), ((0, 2), "1")}   # (column, row); zeros blank
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert fig.get_facecolor()[:3] == (1.0, 1.0, 1.0) and ax.get_facecolor()[:3] == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="expected \\[2, 2\\]"):
        viz.plot_confusion(confusion, ["a", "b"])
