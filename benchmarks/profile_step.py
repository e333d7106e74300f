"""Where a training step of a demo model spends its time on this machine (torch.profiler).

For issue 13 (VAN as efficient as the ResNet on a CPU): prints the machine, each model's step time
(best of the profiled steps) and its operators sorted by their own CPU time, with input shapes, so
that the next optimisation starts from a measurement. Synthetic 28x28 grey images, batch 64, the
models as the demo builds them (van_mini with its default fast CPU path).

    python benchmarks/profile_step.py                     # van_mini and resnet_mini, top 15 ops
    python benchmarks/profile_step.py --models van_mini --top 25 --steps 5

Take it with nothing else running: two PyTorch jobs on the same cores slow each other down.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from van_edu.models import DEMO_MODELS, create_model, model_family
from van_edu.runtime import machine_description


def build(name: str) -> torch.nn.Module:
    """The demo's model ``name`` for 28x28 grey images and 10 classes, in training mode."""
    kw = {"image_size": 28} if model_family(name) == "vit" else {}
    torch.manual_seed(0)
    return create_model(name, num_classes=10, in_chans=1, **kw).train()


def profile_model(name: str, batch: int, steps: int, top: int) -> float:
    """Profile ``steps`` SGD steps of model ``name``; print its top operators; return the best step (s)."""
    model = build(name)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(2):  # warm-up: caches, oneDNN primitives
        step()
    times = []
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    best = min(times)
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    print(f"\n{name}: best step {1e3 * best:.1f} ms = {batch / best:.0f} training images/s "
          f"(profiler overhead included; {steps} steps)")
    rows = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
    print(f"  {'operator':<44} {'input shapes':<44} {'calls':>5} {'self ms/step':>12} {'share':>6}")
    for e in rows[:top]:
        shapes = str(e.input_shapes)[:44]
        print(f"  {e.key[:44]:<44} {shapes:<44} {e.count // steps:>5} "
              f"{e.self_cpu_time_total / 1e3 / steps:>12.2f} {e.self_cpu_time_total / total:>6.1%}")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["van_mini", "resnet_mini"], choices=list(DEMO_MODELS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    print(machine_description("cpu"))
    best = {name: profile_model(name, args.batch, args.steps, args.top) for name in args.models}
    if "van_mini" in best and "resnet_mini" in best:
        print(f"\nvan_mini's training images/s / resnet_mini's: {best['resnet_mini'] / best['van_mini']:.2f} "
              f"(this run, under the profiler)")


if __name__ == "__main__":
    main()
