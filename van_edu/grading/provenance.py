"""Which answers use the course's own implementation of what the task asks the learner to write.

The learner's cells are read, never run, here: :func:`reference_use` parses them (after IPython's
own transformations, so magics are fine) and follows every ``import`` of ``van_edu`` to the objects
it binds, importing only the course's modules named below (never one the learner names: importing
runs code), in time linear in the cells' size. A task is flagged when one of its answer cells imports or uses one of
the objects listed for it in :data:`REFERENCE_CODE` (through any alias or attribute chain), or
imports ``van_edu`` dynamically (``__import__``, ``importlib``) where the target cannot be told.
Using other parts of ``van_edu`` is fine: exercise 03 builds its block from the course's
``Attention`` and ``Mlp`` on purpose.
"""
from __future__ import annotations

import ast
import importlib
import time
import types

from IPython.core.inputtransformer2 import TransformerManager

__all__ = ["REFERENCE_CODE", "AnalysisOverrun", "reference_use", "targets_of"]

# task -> the van_edu objects it asks the learner to write again ("module:attribute")
REFERENCE_CODE = {
    "same_padding": ["van_edu.lka:same_padding"],
    "decompose": ["van_edu.lka:decomposition", "van_edu.lka:Decomposition"],
    "eq3_params": ["van_edu.lka:lka_params"],
    "best_dilation": ["van_edu.lka:best_dilation"],
    "receptive_field": ["van_edu.lka:stack_receptive_field", "van_edu.lka:receptive_field"],
    "table2_row": ["van_edu.lka:conv_params", "van_edu.lka:mobilenet_params", "van_edu.lka:lka_params",
                   "van_edu.complexity:table2"],
    "depthwise_conv": ["van_edu.lka:_depthwise"],
    "effective_kernel": [],
    "lka_module": ["van_edu.lka:LKA", "van_edu.models.van:LKA"],
    "attention_module": ["van_edu.models.van:Attention"],
    "drop_path": ["van_edu.models.layers:DropPath"],
    "overlap_patch_embed": ["van_edu.models.van:OverlapPatchEmbed"],
    "stage_sizes": [],
    "drop_path_rates": ["van_edu.models.layers:linear_drop_path_rates"],
    "van_block": ["van_edu.models.van:Block"],
    "attention": ["van_edu.models.attention:GlobalSelfAttention"],
    "attention_macs": ["van_edu.complexity:count_macs", "van_edu.complexity:MacCounter"],
    "lka_macs": ["van_edu.lka:lka_params", "van_edu.complexity:count_macs", "van_edu.complexity:MacCounter"],
    "count_parameters": ["van_edu.complexity:count_params"],
    "warmup_cosine": ["van_edu.train:WarmupCosine"],
    "param_groups": ["van_edu.train:param_groups", "van_edu.train:make_optimizer"],
    "train_step": ["van_edu.train:fit", "van_edu.train:_train_step"],
    "accuracy": ["van_edu.evaluation:evaluate", "van_edu.evaluation:eval_sums", "van_edu.train:evaluate"],
    "grad_cam": ["van_edu.explain:grad_cam"],
    "upsample_cam": ["van_edu.explain:upsample_maps"],
    "fpn_top_down": ["van_edu.models.fpn:FPN", "van_edu.models.fpn:SemanticFPN", "van_edu.models.fpn:create_segmenter"],
    "confusion_matrix": ["van_edu.metrics:confusion_matrix", "van_edu.metrics:per_image_confusion"],
    "iou_scores": ["van_edu.metrics:iou_per_class", "van_edu.metrics:mean_iou", "van_edu.metrics:segmentation_scores"],
}


# the only modules this analysis imports: those named above and their packages (never one a learner names)
_SAFE = {".".join(spec.split(":")[0].split(".")[:i]) for specs in REFERENCE_CODE.values() for spec in specs
         for i in range(1, spec.count(".") + 2)}


def _walk_path(parts: list[str], targets: dict[int, str]) -> str | None:
    """The first of ``targets`` met along a dotted path under van_edu (``van_edu.lka.LKA.forward``).

    It imports only the modules in :data:`_SAFE` and follows attributes from the longest of them,
    one step at a time: linear in the path's length, and nothing the learner chose is imported.
    """
    cut = max((i for i in range(1, min(len(parts), 6) + 1) if ".".join(parts[:i]) in _SAFE), default=0)
    if not cut:
        return None
    obj = importlib.import_module(".".join(parts[:cut]))
    for name in parts[cut:]:
        if id(obj) in targets:
            break
        obj = getattr(obj, name, None) if isinstance(obj, types.ModuleType) else None
        if obj is None:
            return None
    return targets.get(id(obj))


def targets_of(task: str) -> dict[int, str]:
    """``id(object) -> "van_edu.module.name"`` for the task's reference code."""
    out = {}
    for spec in REFERENCE_CODE.get(task, []):
        module, name = spec.split(":")
        obj = getattr(importlib.import_module(module), name, None)
        if obj is not None:
            out[id(obj)] = f"{module}.{name}"
    return out


def _parse(code: str):
    try:
        return ast.parse(TransformerManager().transform_cell(code))
    except Exception:  # a cell that does not parse: it cannot import anything either
        return None


def _chain(node) -> str | None:
    """``a.b.c`` for a Name or Attribute chain, else None."""
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(names)])
    return None


def _bindings(tree) -> dict[str, str]:
    """Names a cell binds to van_edu paths: ``import van_edu.lka as L`` -> {"L": "van_edu.lka"}."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "van_edu":
                    out[a.asname or a.name.split(".")[0]] = a.name if a.asname else "van_edu"
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "van_edu" \
                and not node.level:
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def _dynamic(tree) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _chain(node.func) or ""
            if name in ("__import__", "importlib.import_module", "import_module", "exec", "eval"):
                return True
    return False


def _chains(tree):
    """Every maximal ``a.b.c`` chain in a cell (not its shorter prefixes: linear in its length)."""
    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Name, ast.Attribute)) and id(node) not in inner:
            chain = _chain(node)
            if chain:
                yield chain.split(".")


def _uses(tree, local: dict[str, str], targets: dict[int, str]) -> str | None:
    """What the cell uses of ``targets``, through the names it binds or an import, if anything."""
    for parts in _chains(tree):
        if parts[0] in local:
            used = _walk_path(local[parts[0]].split(".") + parts[1:], targets)
            if used:
                return f"uses the course's own {used}"
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("van_edu") and not node.level:
            for a in node.names:
                used = _walk_path(f"{node.module}.{a.name}".split("."), targets)
                if used:
                    return f"imports the course's own {used}"
    return None


class AnalysisOverrun(TimeoutError):
    """The analysis took longer than its budget (a notebook made to be slow to read)."""


def reference_use(cells: list[tuple[str, str | None]], tasks: list[str], budget: float = 10.0) -> dict[str, str]:
    """``{task: what}`` for each task whose answer cells use its reference code.

    ``cells`` are the learner's cells in order, as ``(code, task it answers or None)``. Past
    ``budget`` seconds it raises :class:`AnalysisOverrun` (it is linear: real notebooks take milliseconds).
    """
    deadline = time.monotonic() + budget

    def in_time(item):
        if time.monotonic() > deadline:
            raise AnalysisOverrun(f"reading your code for use of the course's own implementations took more "
                                  f"than {budget:g} s")
        return item

    trees = [(_parse(in_time(code)), task) for code, task in cells]
    bound: dict[str, str] = {}
    for tree, _ in trees:
        if tree is not None:
            bound.update(_bindings(tree))
    found: dict[str, str] = {}
    for task in tasks:
        targets = targets_of(task)
        for tree, owner in map(in_time, trees):
            if tree is None or owner != task:
                continue
            if _dynamic(tree) and any(isinstance(n, ast.Constant) and isinstance(n.value, str) and "van_edu" in n.value
                                      for n in ast.walk(tree)):
                found[task] = "imports van_edu dynamically (check by hand)"
                break
            used = _uses(tree, {**bound, **_bindings(tree)}, targets)
            if used:
                found[task] = used
                break
    return found
