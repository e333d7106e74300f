"""The course's VAN against the other VANs a learner could pick: training images/s, in turns.

    make bench-peers          # makes .venv-peers (transformers<5 beside torch), then runs this

Three implementations of one network, with one set of weights:

* ``ours``: ``van_edu``'s VAN as the course trains it (the fast CPU path of LKA, channels-last);
* ``authors' layout``: the same module with ``lka_impl="plain"``, PyTorch's convolutions in the
  authors' arrangement (what their repository computes);
* ``transformers``: the independent port in Hugging Face ``transformers`` (``VanForImageClassification``;
  deprecated in 4.31 and removed in 5.0, so it needs ``transformers<5``, which in turn needs
  ``huggingface-hub<1``, while the course's ``datasets`` needs ``>=1.31``: hence its own environment).

Our weights are copied into the port (the key map below, written from the two state dicts' names),
and its logits must equal ours within 1e-4 on a random batch before anything is timed. Then, for
van_b0 at 224 px (batch 32) and van_mini at 28 px (batch 64): one AdamW step (cross-entropy) per
turn, the three taking turns, ``--rounds`` rounds after a warm-up; the best step of each gives its
images/s. Run it alone on the machine; it prints the machine and writes ``--out`` as JSON.
"""
from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch

from van_edu.models import create_model
from van_edu.runtime import machine_description

# our key (the authors' names) -> the port's; block and stage numbers are carried over (ours count from 1)
_RENAMES = [
    (r"^patch_embed(\d)\.proj\.", "van.encoder.stages.{s}.embeddings.convolution."),
    (r"^patch_embed(\d)\.norm\.", "van.encoder.stages.{s}.embeddings.normalization."),
    (r"^norm(\d)\.", "van.encoder.stages.{s}.normalization."),
    (r"^block(\d)\.(\d+)\.norm1\.", "van.encoder.stages.{s}.layers.{i}.pre_normomalization."),
    (r"^block(\d)\.(\d+)\.norm2\.", "van.encoder.stages.{s}.layers.{i}.post_normalization."),
    (r"^block(\d)\.(\d+)\.attn\.proj_1\.", "van.encoder.stages.{s}.layers.{i}.attention.pre_projection.conv."),
    (r"^block(\d)\.(\d+)\.attn\.proj_2\.", "van.encoder.stages.{s}.layers.{i}.attention.post_projection."),
    (r"^block(\d)\.(\d+)\.attn\.spatial_gating_unit\.conv0\.",
     "van.encoder.stages.{s}.layers.{i}.attention.attention_layer.attention.depth_wise."),
    (r"^block(\d)\.(\d+)\.attn\.spatial_gating_unit\.conv_spatial\.",
     "van.encoder.stages.{s}.layers.{i}.attention.attention_layer.attention.depth_wise_dilated."),
    (r"^block(\d)\.(\d+)\.attn\.spatial_gating_unit\.conv1\.",
     "van.encoder.stages.{s}.layers.{i}.attention.attention_layer.attention.point_wise."),
    (r"^block(\d)\.(\d+)\.mlp\.fc1\.", "van.encoder.stages.{s}.layers.{i}.mlp.in_dense."),
    (r"^block(\d)\.(\d+)\.mlp\.dwconv\.dwconv\.", "van.encoder.stages.{s}.layers.{i}.mlp.depth_wise."),
    (r"^block(\d)\.(\d+)\.mlp\.fc2\.", "van.encoder.stages.{s}.layers.{i}.mlp.out_dense."),
    (r"^block(\d)\.(\d+)\.layer_scale_1$", "van.encoder.stages.{s}.layers.{i}.attention_scaling.weight"),
    (r"^block(\d)\.(\d+)\.layer_scale_2$", "van.encoder.stages.{s}.layers.{i}.mlp_scaling.weight"),
    (r"^head\.", "classifier."),
]


def port_key(key: str) -> str:
    for pattern, template in _RENAMES:
        m = re.match(pattern, key)
        if m:
            stage, block = (m.groups() + (None, None))[:2]
            new = template.format(s=int(stage) - 1 if stage else "", i=block or "")
            return new + key[m.end():]
    raise KeyError(f"no rule for {key!r}")


def port_of(ours, cfg) -> torch.nn.Module:
    """transformers' VanForImageClassification with our model's shape and our weights."""
    from transformers import VanConfig, VanForImageClassification

    n = len(cfg.depths)
    config = VanConfig(num_channels=cfg.in_chans, hidden_sizes=list(cfg.embed_dims), depths=list(cfg.depths),
                       mlp_ratios=list(cfg.mlp_ratios), patch_sizes=[cfg.stem_kernel] + [3] * (n - 1),
                       strides=[cfg.stem_stride] + [2] * (n - 1), num_labels=cfg.num_classes,
                       layer_scale_init_value=cfg.layer_scale_init)
    theirs = VanForImageClassification(config)
    state = {port_key(k): v for k, v in ours.state_dict().items()}
    missing, unexpected = theirs.load_state_dict(state, strict=False)
    # the port builds a final LayerNorm that its forward never uses: the only key we do not fill
    assert set(missing) <= {"van.layernorm.weight", "van.layernorm.bias"} and not unexpected, (missing, unexpected)
    return theirs


def _logits(model, x):
    out = model(x)
    return out.logits if hasattr(out, "logits") else out


def _step(model, optimizer, x, y):
    optimizer.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(_logits(model, x), y).backward()
    optimizer.step()


def compare(name: str, size: int, batch: int, in_chans: int, rounds: int) -> dict:
    torch.manual_seed(0)
    kw = {"num_classes": 10, "in_chans": in_chans}
    ours = create_model(name, **kw)
    with torch.no_grad():        # at initialisation the layer scales (0.01) hide the blocks: make them count
        for key, t in ours.state_dict().items():
            if "layer_scale" in key:
                t.uniform_(0.1, 0.3)                  # (near 1, van_b0's 15 blocks overflow to inf)
            elif key.endswith(("running_mean", "running_var")):
                t.uniform_(0.5, 1.5)
    plain = create_model(name, lka_impl="plain", **kw)
    plain.load_state_dict(ours.state_dict())
    theirs = port_of(ours, ours.config)
    x = torch.randn(batch, in_chans, size, size)
    y = torch.randint(0, 10, (batch,))
    with torch.no_grad():
        for m in (ours, plain, theirs):
            m.eval()
        reference = _logits(ours, x)
        gaps = {"authors' layout": (_logits(plain, x) - reference).abs().max().item(),
                "transformers": (_logits(theirs, x) - reference).abs().max().item()}
    scale = reference.abs().max().item()
    if not (all(g <= 1e-4 for g in gaps.values()) and 1e-3 < scale < 1e3):   # NaN fails too
        raise SystemExit(f"{name}: outputs differ or are not usable (max |diff| {gaps}, largest logit {scale}); "
                         "nothing timed")
    runs = {"ours": (ours, x.contiguous(memory_format=torch.channels_last)), "authors' layout": (plain, x),
            "transformers": (theirs, x)}
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, (m, _) in runs.items()}
    best = dict.fromkeys(runs, float("inf"))
    for m, _ in runs.values():
        m.train()
    for r in range(rounds + 1):                       # round 0 warms up
        for k, (m, inp) in runs.items():
            start = time.perf_counter()
            _step(m, optimizers[k], inp, y)
            took = time.perf_counter() - start
            if r:
                best[k] = min(best[k], took)
    rates = {k: batch / s for k, s in best.items()}
    return {"model": name, "size": size, "batch": batch, "max_abs_logit_gap": gaps, "largest_logit": scale,
            "images_per_second": rates,
            "ours_over_transformers": rates["ours"] / rates["transformers"],
            "ours_over_authors_layout": rates["ours"] / rates["authors' layout"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import transformers

    head = f"{machine_description('cpu')}, torch {torch.__version__}, transformers {transformers.__version__}"
    print(head)
    rows = [compare("van_b0", 224, 32, 3, args.rounds), compare("van_mini", 28, 64, 1, args.rounds)]
    print(f"{'model':<9} {'input':>9} {'ours':>8} {'authors':>8} {'transformers':>13}  ours/transformers  max |logit gap|")
    for r in rows:
        ips = r["images_per_second"]
        authors = ips["authors' layout"]
        print(f"{r['model']:<9} {r['size']:>3}px x{r['batch']:<3} {ips['ours']:8.1f} {authors:8.1f} "
              f"{ips['transformers']:13.1f}  {r['ours_over_transformers']:16.2f}x  {max(r['max_abs_logit_gap'].values()):.1e}")
    if args.out:
        args.out.write_text(json.dumps({"machine": head, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
