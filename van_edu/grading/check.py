"""The checks the exercise notebooks call, one per task: ``check.<task>(your_answer)``.

Each compares the learner's function or class with the reference on fixed inputs (and, with
``hidden=True``, on more and random ones, as the grader's hidden tests do), prints ``PASS`` or
``FAIL`` with a reason, and raises on failure so that a notebook cell, and the grader, see it.
"""
from __future__ import annotations

from ._core import CheckFailed
from .checks_arithmetic import best_dilation, decompose, eq3_params, receptive_field, same_padding, table2_row
from .checks_cam import grad_cam, upsample_cam
from .checks_cost import attention, attention_macs, count_parameters, lka_macs
from .checks_dense import confusion_matrix, fpn_top_down, iou_scores, predict_mask, resize_mask
from .checks_lka import attention_module, depthwise_conv, effective_kernel, lka_module
from .checks_train import accuracy, param_groups, train_step, warmup_cosine
from .checks_van import drop_path, drop_path_rates, overlap_patch_embed, stage_sizes, van_block

CHECKS = {fn.task: fn for fn in (
    same_padding, decompose, eq3_params, best_dilation, receptive_field, table2_row,
    depthwise_conv, effective_kernel, lka_module, attention_module,
    drop_path, overlap_patch_embed, stage_sizes, drop_path_rates, van_block,
    attention, attention_macs, lka_macs, count_parameters,
    warmup_cosine, param_groups, train_step, accuracy,
    grad_cam, upsample_cam,
    fpn_top_down, confusion_matrix, iou_scores, resize_mask, predict_mask,
)}

__all__ = ["CheckFailed", "CHECKS", *CHECKS]
