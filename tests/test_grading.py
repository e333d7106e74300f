"""Exercises and the grader: sources -> copies in sync, checks that catch plausible wrong answers,
and the grader on real notebooks (solutions full marks, stubs zero, every failure mode graded)."""
import ast
import contextlib
import copy
import csv
import importlib
import inspect
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F
from IPython.core.inputtransformer2 import TransformerManager
from torch import nn

from van_edu.cli import main
from van_edu.errors import VanEduError
from van_edu.grading import check, host
from van_edu.grading.assign import (
    SOLUTION_STUB,
    generate,
    is_answer_cell,
    is_test_cell,
    out_of_sync,
    tasks_of,
    validate_source,
)
from van_edu.grading.classroom import grade_folder

EXERCISES = Path(__file__).resolve().parents[1] / "exercises"
SETS = sorted(p.stem for p in (EXERCISES / "source").glob("*.ipynb"))


def read(folder, name):
    return nbformat.read(EXERCISES / folder / f"{name}.ipynb", as_version=4)


# --------------------------------------------------------------------------- sources and copies
def test_committed_copies_are_in_sync_with_their_sources():
    problems = out_of_sync()
    assert not problems, "run `python -m van_edu.grading generate`: " + "; ".join(problems)


def test_the_sets_hold_at_least_20_tasks_each_with_prompt_stub_solution_and_tests():
    assert len(SETS) >= 6
    names = []
    for name in SETS:
        src = read("source", name)
        validate_source(src, name)
        cells = src.cells
        for i, cell in enumerate(cells):
            if not is_test_cell(cell):
                continue
            gid = cell.metadata.nbgrader.grade_id
            names.append(gid)
            answer, prompt = cells[i - 1], cells[i - 2]
            assert is_answer_cell(answer) and "### BEGIN SOLUTION" in answer.source, gid
            assert prompt.cell_type == "markdown" and "point" in prompt.source, gid
            visible, hidden = cell.source.split("### BEGIN HIDDEN TESTS")
            assert f"check.{gid}(" in visible and f"check.{gid}(" in hidden and "hidden=True" in hidden, gid
    assert len(names) >= 20 and len(set(names)) == len(names)
    assert set(names) == set(check.CHECKS), "one check per task, named by the task's grade_id"


@pytest.mark.parametrize("name", SETS)
def test_student_and_solution_copies(name):
    src, student, solution = read("source", name), read("student", name), read("solutions", name)
    assert len(src.cells) == len(student.cells) == len(solution.cells)
    for nb in (student, solution):
        assert nb.metadata.kernelspec.name == "python3"
        assert nb.metadata.van_edu.exercise_set == name
        for cell in nb.cells:
            assert "### BEGIN" not in cell.source and "### END" not in cell.source
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None
    assert "brings the course along" in student.cells[0].source  # how to run on Colab: the badge
    assert "colab.research.google.com/github/" in student.cells[0].source
    for s_cell, st_cell, so_cell in zip(src.cells, student.cells, solution.cells):
        if is_answer_cell(s_cell):
            assert "\n".join(SOLUTION_STUB[-1:]) in st_cell.source
            assert "NotImplementedError" not in so_cell.source
        if is_test_cell(s_cell):
            visible = s_cell.source.split("### BEGIN HIDDEN TESTS")[0].rstrip("\n")
            assert st_cell.source == so_cell.source == visible
            assert st_cell.metadata.nbgrader == s_cell.metadata.nbgrader  # nbgrader can still use them


def test_a_stale_copy_is_detected_and_regenerated(tmp_path):
    shutil.copytree(EXERCISES / "source", tmp_path / "source")
    generate(out_dir=tmp_path)
    assert out_of_sync(out_dir=tmp_path) == []
    nb = nbformat.read(tmp_path / "source" / f"{SETS[0]}.ipynb", as_version=4)
    nb.cells[0].source += "\nA new sentence."
    nbformat.write(nb, tmp_path / "source" / f"{SETS[0]}.ipynb")
    stale = out_of_sync(out_dir=tmp_path)
    assert len(stale) == 2 and all(SETS[0] in p for p in stale)
    generate(out_dir=tmp_path)
    assert out_of_sync(out_dir=tmp_path) == []


def test_a_broken_source_is_refused():
    nb = copy.deepcopy(read("source", SETS[0]))
    answer = next(c for c in nb.cells if is_answer_cell(c))
    answer.source = answer.source.replace("### END SOLUTION", "")
    with pytest.raises(VanEduError, match="unbalanced"):
        validate_source(nb)


# --------------------------------------------------------------------------- checks, in process
# task -> the name the solution defines for it, where the two differ
ANSWER_NAMES = {"receptive_field": "receptive_field", "lka_module": "LKA", "attention_module": "Attention",
                "overlap_patch_embed": "OverlapPatchEmbed", "van_block": "Block", "fpn_top_down": "FPN"}


@pytest.fixture(scope="module")
def answers():
    """The reference answers, as a learner's notebook defines them (solution copies, code cells)."""
    found = {}
    for name in SETS:
        ns, defined = {"__name__": "learner"}, []
        for cell in read("solutions", name).cells:
            if cell.cell_type == "code" and not is_test_cell(cell) and "nbgrader" in cell.metadata:
                # as IPython would run it: the Colab set-up's ! and %pip lines become calls
                exec(compile(TransformerManager().transform_cell(cell.source), name, "exec"), ns)
                if is_answer_cell(cell):
                    defined += [node.name for node in ast.parse(cell.source).body
                                if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
        found.update({k: ns[k] for k in defined})
    return found


def test_the_solutions_pass_the_visible_and_hidden_checks(answers):
    for task, fn in check.CHECKS.items():
        fn(answers[ANSWER_NAMES.get(task, task)], hidden=True)


def test_the_hidden_checks_are_well_posed_for_any_secret_seed(answers):
    """The grader draws each hidden test from a secret seed; the reference answers must pass whatever it
    is. iou_scores once drew an all-zero confusion matrix (no pixel at all, so no mean IoU to ask for) for
    about 2% of seeds, failing honest work: 300 seeds of it (cheap), 6 of every other check."""
    import random

    from van_edu.grading._core import Session

    for task, fn in check.CHECKS.items():
        obj = answers[ANSWER_NAMES.get(task, task)]
        for seed in range(300 if task == "iou_scores" else 6):
            fn.verdict(Session.local(obj, task), True, random.Random(7919 * seed + 1))


def _wrong_answers(a):
    """(task, wrong answer, run the hidden checks?, a phrase the failure must contain)."""
    LKA, Attention, Block, drop_path = a["LKA"], a["Attention"], a["Block"], a["drop_path"]

    class NoGate(LKA):
        def forward(self, x):
            return self.conv1(self.conv_spatial(self.conv0(x)))

    class WrongDilation(LKA):
        def __init__(self, dim, kernel_size=21, dilation=3):
            super().__init__(dim, kernel_size, dilation)
            self.conv_spatial = nn.Conv2d(dim, dim, 7, padding=6, dilation=2, groups=dim)

    class NoShortcut(Attention):
        def forward(self, x):
            return self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))

    class NoPadding(a["OverlapPatchEmbed"]):
        def __init__(self, in_chans, embed_dim, kernel, stride):
            super().__init__(in_chans, embed_dim, kernel, stride)
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel, stride=stride)

    class NoNorm(a["OverlapPatchEmbed"]):
        def forward(self, x):
            return self.proj(x)

    class NoLayerScale(Block):
        def forward(self, x):
            x = x + drop_path(self.attn(self.norm1(x)), self.drop_prob, self.training)
            return x + drop_path(self.mlp(self.norm2(x)), self.drop_prob, self.training)

    class ScaledShortcut(Block):
        def forward(self, x):
            ls1, ls2 = self.layer_scale_1[:, None, None], self.layer_scale_2[:, None, None]
            x = ls1 * (x + self.attn(self.norm1(x)))
            return ls2 * (x + self.mlp(self.norm2(x)))

    class DropoutNotDropPath(Block):
        def forward(self, x):
            ls1, ls2 = self.layer_scale_1[:, None, None], self.layer_scale_2[:, None, None]
            x = x + F.dropout(ls1 * self.attn(self.norm1(x)), self.drop_prob, self.training)
            return x + F.dropout(ls2 * self.mlp(self.norm2(x)), self.drop_prob, self.training)

    class ScaleStartsAtOne(Block):
        def __init__(self, dim, mlp_ratio=4.0, drop_path=0.0, layer_scale_init=1e-2):
            super().__init__(dim, mlp_ratio, drop_path, layer_scale_init=1.0)

    def no_zero_grad(model, x, y, optimizer, amp_dtype=None, scaler=None):
        model.train()
        loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    def no_autocast(model, x, y, optimizer, amp_dtype=None, scaler=None):
        return a["train_step"](model, x, y, optimizer, None, scaler)

    def tensor_loss(model, x, y, optimizer, amp_dtype=None, scaler=None):
        a["train_step"](model, x, y, optimizer, amp_dtype, scaler)
        return torch.tensor(0.0)

    def ignores_scaler(model, x, y, optimizer, amp_dtype=None, scaler=None):
        return a["train_step"](model, x, y, optimizer, amp_dtype, None)

    def no_eval(model, x, y, batch_size=256):
        with torch.no_grad():
            return (model(x).argmax(1) == y).float().mean().item()

    def drops_last_batch(model, x, y, batch_size=256):
        model.eval()
        correct, seen = 0, 0
        with torch.no_grad():
            for s in range(0, len(x) - batch_size + 1, batch_size):
                correct += (model(x[s:s + batch_size]).argmax(1) == y[s:s + batch_size]).sum().item()
                seen += batch_size
        return correct / max(seen, 1)

    def cam_without(step):
        def grad_cam(model, x, target=None):
            feats = model.forward_features(x)
            logits = model.forward_head(feats)
            t = logits.argmax(1) if target is None or step == "target" else torch.as_tensor(target).reshape(-1).expand(len(x))
            grads, = torch.autograd.grad(logits[torch.arange(len(x)), t].sum(), feats)
            w = grads if step == "mean" else grads.mean((2, 3), keepdim=True)
            cam = (w * feats).sum(1)
            cam = cam if step == "relu" else F.relu(cam)
            return (cam if step == "norm" else cam / cam.amax((1, 2), keepdim=True).clamp_min(1e-12)).detach()
        return grad_cam

    def upsample(mode, corners=None):
        def upsample_cam(cam, size):
            size = (size, size) if isinstance(size, int) else size
            return F.interpolate(cam[:, None], size=size, mode=mode, align_corners=corners)[:, 0]
        return upsample_cam

    def fpn_with(up_mode="nearest", coarse_first=True, smooth="after", by_size=True):
        class WrongFPN(a["FPN"]):
            def forward(self, maps):
                merged = [lat(m) for lat, m in zip(self.lateral_convs, maps)]
                if smooth == "before":
                    merged = [conv(m) for conv, m in zip(self.fpn_convs, merged)]
                for i in (range(len(merged) - 1, 0, -1) if coarse_first else range(1, len(merged))):
                    size = {"size": merged[i - 1].shape[-2:]} if by_size else {"scale_factor": 2}
                    merged[i - 1] = merged[i - 1] + F.interpolate(merged[i], mode=up_mode, **size)
                return [conv(m) for conv, m in zip(self.fpn_convs, merged)] if smooth == "after" else merged
        return WrongFPN

    def iou_with(absent=None, union_minus_tp=True, mean_over="scored"):
        def iou_scores(confusion):
            c = confusion.double()
            tp = c.diag()
            union = c.sum(0) + c.sum(1) - (tp if union_minus_tp else 0)
            iou = [t / u if u > 0 else absent for t, u in zip(tp.tolist(), union.tolist())]
            kept = {"scored": [v for v in iou if v is not None], "all": [v or 0.0 for v in iou],
                    "right": [v for v in iou if v]}[mean_over]
            return {"iou": iou, "miou": sum(kept) / len(kept)}
        return iou_scores

    def resize_by(mode, rounding=torch.round):
        def resize_mask(mask, size):
            size = (size, size) if isinstance(size, int) else size
            return rounding(F.interpolate(mask[:, None].float(), size=size, mode=mode)[:, 0]).to(mask.dtype)
        return resize_mask

    def argmax_then_upsample(logits, size):
        size = (size, size) if isinstance(size, int) else size
        return F.interpolate(logits.argmax(1, keepdim=True).float(), size=size, mode="nearest")[:, 0].long()

    def heatmap_summed(boxes, labels, num_classes, out_size, stride):
        heat = torch.zeros(num_classes, out_size, out_size)
        for box, label in zip(boxes, labels):  # each box drawn alone, the bumps added
            heat[label] += a["heatmap_target"](box[None], label[None], num_classes, out_size, stride)[label]
        return heat

    def peaks_without_pool(heat, k):
        scores, index = heat.flatten(1).topk(k)
        h, w = heat.shape[-2:]
        return scores, index // (h * w), index % (h * w) // w, index % w

    def iou_unclamped(p, q):
        side = torch.minimum(p[:, None, 2:], q[None, :, 2:]) - torch.maximum(p[:, None, :2], q[None, :, :2])
        area_p, area_q = (p[:, 2:] - p[:, :2]).prod(-1), (q[:, 2:] - q[:, :2]).prod(-1)
        return side.prod(-1) / (area_p[:, None] + area_q[None] - side.prod(-1))

    def effective_kernel_flipped(w_dw, w_dwd, d):
        return a["effective_kernel"](w_dw, w_dwd.flip(0, 1), d)

    def rates_restart(total, depths):
        return [[total * i / max(n - 1, 1) for i in range(n)] for n in depths]

    def rates_over_n(total, depths):
        n = sum(depths)
        flat = [total * i / n for i in range(n)]
        return [flat[sum(depths[:s]):sum(depths[:s + 1])] for s in range(len(depths))]

    return [
        ("same_padding", lambda k, d=1: k // 2, False, "include d"),
        ("same_padding", lambda k, d=1: d * k // 2, False, "expected"),
        ("decompose", lambda K, d: (2 * d - 1, K // d), False, "round K / d up"),
        ("eq3_params", lambda K, d, C: C * (math.ceil(K / d) ** 2 + (2 * d - 1) ** 2), False, "1x1"),
        ("best_dilation", lambda K: min(range(1, 6), key=lambda d: math.ceil(K / d) ** 2 + (2 * d - 1) ** 2),
         True, "best_dilation("),
        ("best_dilation", lambda K: min(range(1, K + 1), key=lambda d: math.ceil(K / d) ** 2), False, "expected 3"),
        ("receptive_field", lambda layers: sum(d * (k - 1) for k, d in layers), False, "start from 1"),
        ("receptive_field", lambda layers: sum(d * k for k, d in layers), False, "not k d"),
        ("table2_row", lambda C: {"standard": 441 * C, "mobilenet": 441 * C + C * C, "van": C * (74 + C)},
         False, "['standard']"),
        ("depthwise_conv", lambda c, k, d=1: nn.Conv2d(c, c, k, padding=k // 2, dilation=d, groups=c), False,
         "pad by d (k - 1) / 2"),
        ("depthwise_conv", lambda c, k, d=1: nn.Conv2d(c, c, k, padding=d * (k - 1) // 2, dilation=d), False,
         "groups = channels"),
        ("effective_kernel", effective_kernel_flipped, False, "flipped"),
        ("lka_module", NoGate, False, "multiply it by the input"),
        ("lka_module", WrongDilation, False, "conv_spatial has dilation=(2, 2), expected dilation=(3, 3)"),
        ("attention_module", NoShortcut, False, "shortcut"),
        ("drop_path", lambda x, p, training: x * (torch.rand(len(x), *[1] * (x.dim() - 1)) > p) if training else x,
         False, "rescaled"),
        ("drop_path", lambda x, p, training: F.dropout(x, p, training), False, "whole sample"),
        ("drop_path", lambda x, p, training: x * (torch.rand(len(x), *[1] * (x.dim() - 1)) < p) / (1 - p)
         if training and p else x, False, "probability to DROP"),
        ("overlap_patch_embed", NoPadding, False, "pad by kernel // 2"),
        ("overlap_patch_embed", NoNorm, False, "BatchNorm"),
        ("stage_sizes", lambda n, k=7, s=4, m=4: [n // s // 2 ** i for i in range(m)], False, "not H // s"),
        ("drop_path_rates", rates_restart, False, "do not restart"),
        ("drop_path_rates", rates_over_n, False, "exactly `total`"),
        ("van_block", NoLayerScale, False, "layer scale"),
        ("van_block", ScaledShortcut, False, "not the shortcut"),
        ("van_block", DropoutNotDropPath, False, "as a whole per sample"),
        ("van_block", ScaleStartsAtOne, False, "start at layer_scale_init"),
        ("attention", lambda q, k, v: (q @ k.transpose(-2, -1)).softmax(-1) @ v, False, "sqrt(D)"),
        ("attention", lambda q, k, v: (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(-2) @ v, False,
         "over the keys"),
        ("attention_macs", lambda h, w, c: 4 * h * w * c * c + 2 * h * w * c, False, "N^2 C"),
        ("lka_macs", lambda h, w, c, kernel_size=21, dilation=3: c * (49 + 25) * h * w, False, "C^2 per position"),
        ("count_parameters", lambda m, trainable_only=False: len(list(m.parameters())), False, "numel"),
        ("warmup_cosine", lambda s, w, t: s / w if s < w else a["warmup_cosine"](s, w, t), False, "(step + 1)"),
        ("param_groups", lambda m, wd: [{"params": [p for n, p in m.named_parameters() if not n.endswith("bias")],
                                         "weight_decay": wd},
                                        {"params": [p for n, p in m.named_parameters() if n.endswith("bias")],
                                         "weight_decay": 0.0}], False, "no weight decay"),
        ("train_step", no_zero_grad, False, "zero_grad"),
        ("train_step", no_autocast, False, "torch.autocast"),
        ("train_step", tensor_loss, False, "Python float"),
        ("train_step", ignores_scaler, True, "scaler.step(optimizer)"),
        ("accuracy", no_eval, False, "model.eval()"),
        ("accuracy", drops_last_batch, False, "the last batch may be smaller"),
        ("grad_cam", cam_without("relu"), False, "ReLU"),
        ("grad_cam", cam_without("norm"), False, "maximum"),
        ("grad_cam", cam_without("mean"), False, "MEAN"),
        ("grad_cam", cam_without("target"), False, "target"),
        ("upsample_cam", upsample("nearest"), False, "bilinear"),
        ("upsample_cam", upsample("bilinear", True), False, "align_corners=False"),
        ("fpn_top_down", fpn_with(up_mode="bilinear"), False, "not bilinear"),
        ("fpn_top_down", fpn_with(coarse_first=False), False, "coarsest level down"),
        ("fpn_top_down", fpn_with(smooth="before"), False, "after the top-down additions"),
        ("fpn_top_down", fpn_with(smooth="never"), False, "3x3 conv"),
        ("fpn_top_down", fpn_with(by_size=False), False, "not by scale_factor=2"),
        ("confusion_matrix", lambda p, t, k, ignore_index=None: torch.bincount(
            t.flatten() * k + p.flatten(), minlength=k * k).reshape(k, k), False, "ignore_index=255: leave them out"),
        ("confusion_matrix", lambda p, t, k, ignore_index=None: a["confusion_matrix"](p, t, k, ignore_index).T,
         False, "the transpose"),
        ("iou_scores", iou_with(absent=0.0, mean_over="all"), False, "its IoU is None"),
        ("iou_scores", iou_with(absent=float("nan")), False, "not NaN"),
        ("iou_scores", iou_with(union_minus_tp=False), False, "row + column - diagonal"),
        ("iou_scores", iou_with(mean_over="right"), False, "never right has IoU 0"),
        ("resize_mask", resize_by("bilinear"), False, "appear in no pixel of the input"),
        ("resize_mask", resize_by("bilinear", torch.floor), True, "averages neighbouring labels"),
        ("resize_mask", resize_by("nearest"), False, "mode='nearest-exact'"),
        ("resize_mask", lambda m, size: resize_by("nearest-exact")(m, size).long(), False, "own dtype torch.uint8"),
        ("predict_mask", argmax_then_upsample, False, "upsample the scores first"),
        ("predict_mask", lambda logits, size: F.interpolate(logits, size=size, mode="bilinear", align_corners=True)
         .argmax(1), False, "align_corners=False"),
        ("heatmap_target", heatmap_summed, False, "maximum, not the sum"),
        ("heatmap_target", lambda boxes, labels, k, size, stride: a["heatmap_target"](
            boxes + stride / 2, labels, k, size, stride), False, "floored (int(cx)), not rounded"),
        ("heatmap_target", lambda boxes, labels, k, size, stride: a["heatmap_target"](
            boxes[:, [1, 0, 3, 2]], labels, k, size, stride), False, "rows are y and columns x"),
        ("find_peaks", peaks_without_pool, False, "3x3 local maxima"),
        ("find_peaks", lambda heat, k: [a["find_peaks"](heat, k)[i] for i in (0, 1, 3, 2)], False, "swapped"),
        ("find_peaks", lambda heat, k: [t.float() for t in a["find_peaks"](heat, k)], False, "dtype torch.int64"),
        ("box_iou", iou_unclamped, False, "clamp each side of the overlap at 0"),
        ("box_iou", lambda p, q: torch.stack([a["box_iou"](x[None], q)[0] for x in p]), True, "empty [n, m]"),
    ]


def test_every_task_has_a_plausible_wrong_answer_that_is_caught(answers, capsys):
    cases = _wrong_answers(answers)
    assert {task for task, *_ in cases} == set(check.CHECKS)
    missed = []
    for task, wrong, hidden, phrase in cases:
        try:
            check.CHECKS[task](wrong, hidden=hidden)
            missed.append(f"{task}: the wrong answer passed")
        except check.CheckFailed as err:
            if phrase not in str(err):
                missed.append(f"{task}: {phrase!r} not in {str(err)!r}")
        if f"FAIL {task}: " not in capsys.readouterr().out:
            missed.append(f"{task}: no FAIL line printed")
    assert not missed, "\n".join(missed)


def _poisoned(value):
    """``value`` with every number made NaN (tensors too), parameters left as they are."""
    if isinstance(value, nn.Parameter):
        return value
    if isinstance(value, torch.Tensor):
        return value + float("nan")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float("nan")
    if isinstance(value, (list, tuple)):
        return type(value)(_poisoned(v) for v in value)
    if isinstance(value, dict):
        return {k: _poisoned(v) for k, v in value.items()}
    if isinstance(value, nn.Module):  # a module a function returns (depthwise_conv): NaN out of it
        value.register_forward_hook(lambda module, args, out: _poisoned(out))
    return value


def _nan_answer(answer):
    if isinstance(answer, type):  # a module class: the same module, NaN out of its forward
        return type(answer.__name__, (answer,), {"forward": lambda self, *a: _poisoned(answer.forward(self, *a))})
    return lambda *args, **kwargs: _poisoned(answer(*args, **kwargs))


@pytest.mark.parametrize("task", sorted(check.CHECKS))
def test_every_task_refuses_nan_where_its_answer_has_numbers(answers, task, capsys):
    """The right answer with NaN for every number it returns fails every check (NaN compares False)."""
    with pytest.raises(check.CheckFailed, match="NaN"):
        check.CHECKS[task](_nan_answer(answers[ANSWER_NAMES.get(task, task)]), hidden=True)


def test_an_integer_answer_must_be_a_whole_number_not_a_truncated_one(capsys):
    def unfloored(image_size, stem_kernel=7, stem_stride=4, num_stages=4):
        sizes, side = [], image_size
        for i in range(num_stages):
            k, s = (stem_kernel, stem_stride) if i == 0 else (3, 2)
            side = (side + 2 * (k // 2) - k) / s + 1  # 224 -> 56.75, 28.875, ...: int() would floor them
            sizes.append(side)
        return sizes

    with pytest.raises(check.CheckFailed, match=r"expected the whole number 56, got 56.75, which is not a whole"):
        check.stage_sizes(unfloored)
    assert check.stage_sizes(lambda *a, **k: [float(int(s)) for s in unfloored(*a, **k)])  # 56.0 is a whole number


@pytest.mark.parametrize("got, want, phrase", [
    ([1, 2], [1, 2, 3], "a sequence of 3"),                       # the length, before any value
    ([[9.0], [1.0, 2.0]], [[0.0], [1.0]], r"\[1\]: expected a sequence of 1"),  # all lengths before values
    ({"a": 1}, {"a": 1, "b": 2}, "keys"),
    (torch.zeros(2, 3), torch.zeros(3, 2), "shape"),
    (torch.zeros(2, dtype=torch.int64), torch.zeros(2), "dtype"),
    (torch.tensor([1.0, float("inf")]), torch.zeros(2), "NaN or inf"),
    (float("inf"), 2.0, "finite"),
    (True, 1, "a number"),
    (3.0000001, 3, "not a whole number"),
    (4.0, 3, "expected 3, got 4"),
    ("3", 3, "a number"),
])
def test_one_comparison_checks_kind_length_and_finiteness_before_values(got, want, phrase):
    from van_edu.grading._core import expect
    with pytest.raises(check.CheckFailed, match=phrase):
        expect(got, want, "x")


def test_a_stub_is_reported_as_not_answered(answers, capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError()

    with pytest.raises(NotImplementedError, match="still raises NotImplementedError"):
        check.eq3_params(stub)
    assert "FAIL eq3_params: not answered yet" in capsys.readouterr().out


# --------------------------------------------------------------------------- the grader, on notebooks
def test_importing_the_command_module_runs_nothing():
    import importlib
    import sys
    sys.modules.pop("van_edu.__main__", None)
    importlib.import_module("van_edu.__main__")  # it used to run the CLI (and exit) on import


def test_the_box_gets_the_course_without_the_grader_and_without_what_the_tasks_hide(tmp_path):
    """Every check's hidden code is replaced in the box's copy (its text gone); what is left still imports."""
    from van_edu.grading.host import BOX_SIDE, course_copy
    hidden = sorted({name for c in check.CHECKS.values() for name in c.hides})
    course_copy(tmp_path, hidden)
    assert sorted(p.name for p in (tmp_path / "van_edu" / "grading").iterdir()) == sorted([*BOX_SIDE, "check.py"])
    for name in hidden:
        module, attr = name.rsplit(".", 1)
        copied = (tmp_path / Path(*module.split("."))).with_suffix(".py").read_text()
        real = inspect.getsource(getattr(importlib.import_module(module), attr))
        assert real.split("\n", 1)[1] not in copied and f"class {attr}:  # hidden while grading" in copied, name
    script = ("import importlib, pkgutil, sys\nsys.path.insert(0, sys.argv[1])\nimport van_edu\n"
              "assert van_edu.__file__.startswith(sys.argv[1])\n"
              "for m in pkgutil.walk_packages(van_edu.__path__, 'van_edu.'):\n    importlib.import_module(m.name)\n"
              "from van_edu.lka import lka_params\ntry:\n    lka_params(21, 3, 8)\nexcept RuntimeError as err:\n"
              "    print(err)")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert "van_edu.lka.lka_params is hidden while grading" in out.stdout, out.stdout + out.stderr
    with pytest.raises(VanEduError, match="does not define"):
        course_copy(tmp_path / "again", ["van_edu.lka.no_such_function"])


def test_the_grading_package_is_layered_without_circles():
    """Each module imports only from its own layer or those before it (the package's docstring), and
    the imports between its modules make no circle."""
    folder = Path(check.__file__).parent
    layers = [{"assign", "__main__"}, {"wire", "fixtures", "agent"},
              {"_core", "reference", "check"} | {p.stem for p in folder.glob("checks_*.py")},
              {"limits", "host", "box", "kernel"}, {"scores", "grader", "classroom", "cli", "__init__"}]
    layer = {name: i for i, names in enumerate(layers) for name in names}
    assert set(layer) == {p.stem for p in folder.glob("*.py")}  # every module has its place
    graph = {}
    for path in folder.glob("*.py"):
        graph[path.stem] = {n.module or a.name for n in ast.walk(ast.parse(path.read_text()))
                            if isinstance(n, ast.ImportFrom) and n.level == 1 for a in n.names} & set(layer)
        for target in graph[path.stem]:
            assert layer[target] <= layer[path.stem], f"{path.stem} imports {target}, a later layer"
    done: set = set()

    def visit(name, path):
        assert name not in path, f"an import circle: {' -> '.join(path + [name])}"
        if name not in done:
            for target in graph[name]:
                visit(target, path + [name])
            done.add(name)

    for name in graph:
        visit(name, [])


def test_the_plan_finds_test_cells_by_their_text_never_by_the_notebooks_metadata():
    from van_edu.grading.grader import _plan
    tasks = tasks_of(read("source", SETS[0]))
    nb = read("solutions", SETS[0])
    cells = {c.metadata.nbgrader["grade_id"]: c for c in nb.cells if "nbgrader" in c.metadata}
    cells["same_padding"].metadata.nbgrader = {"grade": True, "grade_id": "decompose", "points": 100}  # relabelled
    cells["eq3_params_answer"].metadata.nbgrader = {"grade": True, "grade_id": "eq3_params", "points": 9}
    cells["decompose"].source += "\nprint('edited')"  # no longer the teacher's test: a learner cell, run
    nb.cells.remove(cells["best_dilation"])
    steps, missing = _plan(nb, tasks)
    tests = [(s.task, s.number) for s in steps if s.kind == "test"]
    number = {id(c): i for i, c in enumerate(nb.cells, start=1)}
    assert tests[:4] == [("same_padding", number[id(cells["same_padding"])]),
                         ("eq3_params", number[id(cells["eq3_params"])]),
                         ("receptive_field", number[id(cells["receptive_field"])]),
                         ("table2_row", number[id(cells["table2_row"])])]
    assert tests[4:] == [("decompose", None), ("best_dilation", None)] and missing == {"decompose", "best_dilation"}
    learner = {s.number: s for s in steps if s.kind == "learner"}
    assert learner[number[id(cells["eq3_params_answer"])]].task == "eq3_params"  # run, and answers the next test
    assert learner[number[id(cells["decompose_answer"])]].task == "decompose"  # by the name it defines
    assert "print('edited')" in learner[number[id(cells["decompose"])]].code


def test_a_crash_of_the_graders_own_code_scores_the_notebook_zero_with_a_reason(tmp_path, monkeypatch):
    from van_edu.grading import grader

    def crash(*args):
        raise RuntimeError("an odd input")

    monkeypatch.setattr(grader, "_plan", crash)
    path = tmp_path / f"{SETS[0]}.ipynb"
    shutil.copy(EXERCISES / "solutions" / path.name, path)
    report = grader.grade_notebook(path)
    assert report.score == 0 and report.failed and len(report.tasks) == 6
    assert all("the grader could not grade this notebook (RuntimeError: an odd input)" in t.message
               for t in report.tasks)


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    """A class: alice hands in every solution copy, bob every untouched student copy, carol a file
    that is not a notebook; graded once for the tests below."""
    root = tmp_path_factory.mktemp("class")
    for learner, folder in (("alice", "solutions"), ("bob", "student")):
        (root / learner).mkdir()
        for name in SETS:
            shutil.copy(EXERCISES / folder / f"{name}.ipynb", root / learner / f"{name}.ipynb")
    (root / "carol").mkdir()
    (root / "carol" / f"{SETS[0]}.ipynb").write_text("{ this is not json")
    rows, reports = grade_folder(root, root / "grades.csv")
    return root, rows, {(Path(r.notebook).parent.name, Path(r.notebook).stem): r for r in reports}


@pytest.mark.slow
@pytest.mark.parametrize("name", SETS)
def test_each_solution_copy_scores_full_marks(graded_class, name):
    report = graded_class[2][("alice", name)]
    assert report.score == report.max_score > 0, report.format()
    assert report.errors() == []


@pytest.mark.slow
@pytest.mark.parametrize("name", SETS)
def test_each_student_copy_scores_zero_and_every_task_is_not_answered_yet(graded_class, name):
    report = graded_class[2][("bob", name)]
    assert report.score == 0 and report.max_score > 0
    # the stubs raise when the checks call them, or (a stub at the top level of a cell) when run
    assert {e[1] for e in report.errors()} <= {"NotImplementedError"}, report.errors()
    assert all(t.message.startswith("not answered yet") for t in report.tasks), report.format()


@pytest.mark.slow
def test_a_folder_gives_one_csv_row_per_learner(graded_class):
    root, rows, _ = graded_class
    table = list(csv.DictReader((root / "grades.csv").open()))
    assert [r["learner"] for r in table] == ["alice", "bob", "carol"]
    total = sum(t.points for n in SETS for t in tasks_of(read("source", n)))
    assert all(float(r["max_score"]) == total for r in table)
    assert float(table[0]["score"]) == total and float(table[1]["score"]) == 0 == float(table[2]["score"])
    assert "no submission" in table[2]["notes"]
    assert set(check.CHECKS) <= set(table[0])  # a column per task


@pytest.mark.slow
def test_an_unreadable_notebook_scores_zero_with_the_reason(graded_class):
    report = graded_class[2][("carol", SETS[0])]
    assert report.score == 0 and all("could not be read" in t.message for t in report.tasks)


def _by_id(nb, gid):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == gid)


@pytest.fixture(scope="module")
def failure_report(tmp_path_factory):
    """Set 01 answered with every kind of learner error, graded by the command with --json."""
    nb = read("solutions", "01_lka_arithmetic")
    _by_id(nb, "same_padding_answer").source = "def same_padding(kernel, dilation=1):\n    return 1 // 0"
    nb.cells.remove(_by_id(nb, "same_padding"))                                    # a deleted test cell
    _by_id(nb, "decompose_answer").source = "def decompose(K, d)\n    return 2 * d - 1, -(-K // d)"
    _by_id(nb, "decompose").source = "pass  # the learner 'fixed' the test"         # tampering does not help
    _by_id(nb, "eq3_params_answer").source = "def eq3_params(K, d, C):\n    while True:\n        pass"
    best = _by_id(nb, "best_dilation_answer")
    best.source = best.source.replace("def best_dilation(", "def best_d(")           # a renamed function
    _by_id(nb, "receptive_field_answer").source += "\nfor _ in range(3000):\n    print('x' * 100)"
    table2 = _by_id(nb, "table2_row_answer")
    table2.source = ('def table2_row(C):\n    return {"standard": 441 * C * C, "mobilenet": 441 * C + C * C, '
                     '"van": C * (74 + C)}')
    at = nb.cells.index(table2)
    nb.cells.insert(at, nbformat.v4.new_code_cell("import os\nos._exit(1)"))         # kills the kernel
    nb.cells.insert(at, nbformat.v4.new_code_cell(                                   # ignores the interrupt
        "import time\nwhile True:\n    try:\n        time.sleep(0.05)\n    except KeyboardInterrupt:\n        pass"))
    nb.cells.append(nbformat.v4.new_code_cell("raise ValueError('a stray error at the end')"))
    folder = tmp_path_factory.mktemp("failures")
    path, out = folder / "01_lka_arithmetic.ipynb", folder / "report.json"
    nbformat.write(nb, path)
    assert main(["grade", str(path), "--json", str(out), "--timeout", "5"]) == 0
    report = json.loads(out.read_text())
    return report, {t["name"]: t for t in report["tasks"]}


@pytest.mark.slow
def test_the_json_report_has_the_promised_shape(failure_report):
    report, _ = failure_report
    assert {"score", "max_score", "tasks"} <= set(report)
    assert report["max_score"] == 6 and report["score"] == 1
    for t in report["tasks"]:
        assert set(t) == {"name", "score", "max_score", "message", "hidden"}


@pytest.mark.parametrize("task, score, phrases", [
    ("same_padding", 0, ["raised ZeroDivisionError", "no test cell"]),
    ("decompose", 0, ["NameError", "SyntaxError"]),
    ("eq3_params", 0, ["timed out after 5 s"]),
    ("best_dilation", 0, ["name 'best_dilation' is not defined", "rename"]),
    ("receptive_field", 0, ["printed more than 100,000 characters"]),
    ("table2_row", 1, ["passed"]),  # after a hung kernel and a dead one, the rest is still graded
])
@pytest.mark.slow
def test_every_failure_mode_is_graded_not_crashed(failure_report, task, score, phrases):
    result = failure_report[1][task]
    assert result["score"] == score, result
    for phrase in phrases:
        assert phrase in result["message"], result


@pytest.mark.slow
def test_the_command_grades_a_folder_into_a_csv(tmp_path, capsys):
    # a renamed file: the exercise set is found from the notebook's metadata
    shutil.copy(EXERCISES / "solutions" / f"{SETS[0]}.ipynb", tmp_path / "dave.ipynb")
    assert main(["grade", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "dave: total 6/6" in out
    rows = list(csv.DictReader((tmp_path / "grades.csv").open()))
    assert len(rows) == 1 and rows[0]["learner"] == "dave" and float(rows[0]["score"]) == 6


def test_the_command_refuses_a_missing_notebook_in_one_line(tmp_path, capsys):
    assert main(["grade", str(tmp_path / "nowhere.ipynb")]) == 2
    err = capsys.readouterr().err
    assert "no such notebook" in err and "Traceback" not in err


# --------------------------------------------------------------------------- a class at scale, nothing lost
@pytest.fixture(scope="module")
def small_class(tmp_path_factory):
    """Five learners of set 01 (right, stubs, one wrong answer, not a notebook, a learner file), graded once
    by the command with --jobs 1 and a fixed secret: what every other way of grading them must equal."""
    root = tmp_path_factory.mktemp("scale") / "class"
    root.mkdir()
    for learner, folder in (("alice", "solutions"), ("bob", "student"), ("carol", "solutions")):
        (root / learner).mkdir()
        shutil.copy(EXERCISES / folder / f"{SETS[0]}.ipynb", root / learner / f"{SETS[0]}.ipynb")
    nb = read("solutions", SETS[0])
    _by_id(nb, "eq3_params_answer").source = "def eq3_params(K, d, C):\n    return C * C"
    _by_id(nb, "best_dilation_answer").source = (  # right on the visible tests only
        "import math\ndef best_dilation(K):\n"
        "    best = min(range(1, K + 1), key=lambda d: (math.ceil(K / d) ** 2 + (2 * d - 1) ** 2, d))\n"
        "    return best if K in (21, 7, 14, 28) else best + 1")
    nbformat.write(nb, root / "carol" / f"{SETS[0]}.ipynb")
    (root / "dave").mkdir()
    (root / "dave" / f"{SETS[0]}.ipynb").write_text("{ not json")
    shutil.copy(EXERCISES / "solutions" / f"{SETS[0]}.ipynb", root / "erin.ipynb")
    base = root.parent / "base.csv"
    assert main(["grade", str(root), "--jobs", "1", "--secret", "7", "--csv", str(base), "--timeout", "20"]) == 0
    return root, base.read_text()


def _copy(root: Path, to: Path) -> Path:
    shutil.copytree(root, to, ignore=shutil.ignore_patterns(".van-edu-journal", "*.csv"))
    return to


@pytest.mark.slow
def test_a_class_graded_two_at_a_time_equals_one_at_a_time(small_class, tmp_path):
    root, base = small_class
    assert base.count("\n") == 6 and "alice,6,6" in base  # five learners, a header
    folder = _copy(root, tmp_path / "class")
    assert main(["grade", str(folder), "--jobs", "2", "--secret", "7", "--timeout", "20"]) == 0
    assert (folder / "grades.csv").read_text() == base


@pytest.mark.slow
def test_a_killed_run_resumed_equals_an_uninterrupted_one_and_grades_nothing_twice(small_class, tmp_path, capsys):
    root, base = small_class
    folder = _copy(root, tmp_path / "class")
    journal = folder / ".van-edu-journal"
    run = subprocess.Popen([sys.executable, "-m", "van_edu", "grade", str(folder), "--jobs", "1", "--secret", "7",
                            "--timeout", "20"], start_new_session=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list(journal.glob("*.json")) and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)  # the grader and its kernel, as a reboot or an OOM kill would
    run.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in journal.glob("*.json")}
    assert 1 <= len(finished) < 5 and not (folder / "grades.csv").exists()
    assert main(["grade", str(folder), "--resume", "--jobs", "1", "--secret", "7", "--timeout", "20"]) == 0
    assert (folder / "grades.csv").read_text() == base
    assert capsys.readouterr().out.count("(from the journal)") == len(finished)
    assert all(p.stat().st_mtime_ns == finished[p.name] for p in journal.glob("*.json") if p.name in finished)


def _processes() -> dict[int, tuple[int, str, str]]:
    """Every live process: pid -> (parent pid, state, command line)."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            found[int(proc.name)] = (int(stat[1]), stat[0], (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, ValueError, IndexError):
            continue
    return {pid: p for pid, p in found.items() if p[1] != "Z"}


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_grader_killed_alone_leaves_no_worker_or_box_running_and_its_folders_are_swept(tmp_path):
    """An OOM kill ends the grader only, not its process group: its workers and their boxes must end too."""
    folder, tmp = tmp_path / "class", tmp_path / "tmp"
    tmp.mkdir()
    for learner in ("ann", "ben"):
        nb = read("solutions", SETS[0])
        nb.cells.insert(1, nbformat.v4.new_code_cell("import time\ntime.sleep(300)"))
        (folder / learner).mkdir(parents=True)
        nbformat.write(nb, folder / learner / f"{SETS[0]}.ipynb")
    run = subprocess.Popen([sys.executable, "-m", "van_edu", "grade", str(folder), "--jobs", "2", "--timeout", "600"],
                           env={**os.environ, "TMPDIR": str(tmp)}, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and run.poll() is None:
            boxes = {cmd.split(" --box ")[1].split()[0] for _, _, cmd in _processes().values()
                     if str(tmp) in cmd and " --box " in cmd and "bwrap" not in cmd.split()[0]}  # the kernels' boxes
            if len(boxes) == 2:
                break
            time.sleep(0.2)
        assert len(boxes) == 2, "two kernels should be running"
        workers = [pid for pid, (parent, _, _) in _processes().items() if parent == run.pid]
        assert len(workers) >= 2
        run.kill()  # the grader alone, as the OOM killer would
        run.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            left = {pid: cmd for pid, (_, _, cmd) in _processes().items() if pid in workers or str(tmp) in cmd}
            if not left:
                break
            time.sleep(0.2)
        assert not left, f"still running after the grader was killed: {[c[:120] for c in left.values()]}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)  # its workers too (they are in its process group), whatever happened
    folders = sorted(tmp.glob("van-edu-grade-*"))
    assert len(folders) == 2 and all((f / "owner.json").exists() for f in folders)
    cgroups = [json.loads((f / "owner.json").read_text())["cgroup"] for f in folders]
    assert host.sweep(tmp) == folders
    assert not list(tmp.glob("van-edu-grade-*")) and not any(g and Path(g).exists() for g in cgroups)


def test_the_sweep_leaves_a_live_graders_folders_and_unclaimed_ones(tmp_path):
    mine, dead, unclaimed = (tmp_path / f"van-edu-grade-{n}" for n in ("mine", "dead", "other"))
    for f in (mine, dead, unclaimed):
        f.mkdir()
        (f / "box").mkdir()
    host.claim(mine, None)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no process holds now
    (dead / "owner.json").write_text(json.dumps({"pid": gone.pid, "started": "1", "cgroup": "/etc"}))
    assert host.sweep(tmp_path) == [dead]
    assert mine.is_dir() and unclaimed.is_dir() and not dead.exists()


@pytest.mark.slow
def test_shards_graded_apart_and_merged_equal_one_run(small_class, tmp_path, capsys):
    root, base = small_class
    shards = [_copy(root, tmp_path / f"machine{k}") for k in (1, 2)]
    for k, folder in enumerate(shards, start=1):
        assert main(["grade", str(folder), "--shard", f"{k}/2", "--secret", "7", "--timeout", "20"]) == 0
    parts = [len(list((f / ".van-edu-journal").glob("*.json"))) for f in shards]
    assert sum(parts) == 5 and 0 < parts[0] < 5  # each machine graded its share only
    out = tmp_path / "merged.csv"
    assert main(["grade", "merge", *map(str, shards), "--csv", str(out)]) == 0
    assert out.read_text() == base


def test_bad_shards_and_merges_are_refused_in_one_line(tmp_path, capsys):
    for argv, phrase in ((["grade", str(tmp_path), "--shard", "3/2"], "K/N"),
                         (["grade", "merge", str(tmp_path / "nowhere"), "--csv", str(tmp_path / "x.csv")], "no journal")):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert phrase in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_each_learner_gets_a_markdown_report_without_hidden_inputs_unless_asked(small_class, tmp_path):
    root, base = small_class
    folder = root.parent / "feedback"
    assert sorted(p.stem for p in folder.glob("*.md")) == ["alice", "bob", "carol", "dave", "erin"]
    carol = (folder / "carol.md").read_text()
    assert carol.startswith("# carol: 3/6") and "| same\\_padding | 1/1 | passed |" in carol  # table2_row uses eq3
    assert "| eq3\\_params | 0/1 | eq3\\_params(K=21, d=3, C=32): expected" in carol  # a visible input: shown
    line = next(x for x in carol.splitlines() if x.startswith("| best\\_dilation"))
    assert "fails one of the hidden tests" in line and "best\\_dilation(" not in line, line
    assert main(["grade", "merge", str(root), "--csv", str(tmp_path / "g.csv"), "--feedback-hidden"]) == 0
    line = next(x for x in (tmp_path / "feedback" / "carol.md").read_text().splitlines() if "best\\_dilation" in x)
    assert "best\\_dilation(" in line and "expected" in line, line  # the teacher asked: the hidden input shown
    assert "no submission" in (folder / "dave.md").read_text() or "could not be read" in (folder / "dave.md").read_text()


@pytest.mark.slow
def test_gradescope_results_follow_the_csv_and_hide_hidden_inputs_unless_asked(small_class, tmp_path):
    root, base = small_class
    for flags, shown in (([], False), (["--feedback-hidden"], True)):
        out = tmp_path / ("shown" if shown else "hidden")
        out.mkdir()                                   # the CSV's folder must exist; --gradescope's is made
        assert main(["grade", "merge", str(root), "--csv", str(out / "g.csv"), "--gradescope", str(out / "gs"),
                     *flags]) == 0
        carol = json.loads((out / "gs" / "carol" / "results.json").read_text())
        assert carol["score"] == 3 and sum(t["max_score"] for t in carol["tests"]) == 6, carol
        tests = {t["name"]: t for t in carol["tests"]}
        assert tests[f"{SETS[0]}: same_padding"] == {"name": f"{SETS[0]}: same_padding", "score": 1.0,
                                                    "max_score": 1.0, "output": "passed"}
        best = tests[f"{SETS[0]}: best_dilation"]["output"]
        assert ("best_dilation(" in best) == shown and ("fails one of the hidden tests" in best) != shown, best
        rows = {r["learner"]: float(r["score"]) for r in csv.DictReader(io.StringIO(base))}
        assert {p.parent.name: json.loads(p.read_text())["score"] for p in (out / "gs").glob("*/results.json")} == rows
