"""``van-edu bench``: the speed figures of the course, measured side by side in one run.

1. LKA on this machine: plain (three ``nn.Conv2d``, as the authors wrote it) against the fast path
   (``impl="fast"``: matrix products, the same weights). For each shape [B, C, H, W] of the
   course's models it times forward + backward of one LKA (``loss = (LKA(x) * g).sum()``, gradients
   for the input and all weights), checks both give the same output and gradients, and reports
   the ratio. Times are the best of ``repeat`` runs, plain and fast alternating so both see the
   same load on a shared machine; the JSON also holds the medians.
2. Whole training steps of van_mini, ``lka_impl="plain"`` against ``"auto"`` (the fast LKA and
   channels-last stages), in images/s.
3. The demo's three models (van_mini, vit_mini, resnet_mini): training and inference images/s,
   and how much of the machine each training step uses: the machine's fp32 (and, where oneDNN
   has it, bf16) matrix-product rate is measured in the same run, and a training step is counted
   as 6 x the model's multiply-adds per image (forward 2, backward 4 FLOPs per multiply-add), so
   ``fraction = 6 * MACs * images/s / matmul FLOP/s``. FLOPs are not time: the fractions differ.
4. The roofline: each demo model's training step against this machine's two ceilings (matrix-product
   rate and memory bandwidth), operator by operator (``van_edu.roofline``).
5. Scaling: LKA vs global self-attention vs a dense 21x21 depth-wise conv, time and peak memory
   against resolution, with the fitted log-log slopes against the number of pixels.
"""
from __future__ import annotations

import copy
import statistics

import torch

from .lka import LKA
from .lka_fast import fast_plan
from .models.layers import init_conv_fan_out
from .runtime import best_time, machine

# (group, batch, channels, side): the LKA inputs of the course's models.
SHAPES = [
    ("van_mini, stem stride 2, 28 px", 128, 32, 14),
    ("van_mini, stem stride 2, 28 px", 128, 64, 7),
    ("van_mini, stem stride 2, 28 px", 128, 128, 4),
    ("van_mini, stem stride 1, 28 px", 128, 32, 28),
    ("van_mini, stem stride 1, 28 px", 128, 64, 14),
    ("van_mini, stem stride 1, 28 px", 128, 128, 7),
    ("van_cifar, stem stride 1, 32 px", 128, 64, 32),
    ("van_cifar, stem stride 1, 32 px", 128, 128, 16),
    ("van_cifar, stem stride 1, 32 px", 128, 256, 8),
    ("van_cifar, stem stride 1, 32 px", 128, 512, 4),
    ("van_b0, 224 px", 32, 32, 56),
    ("van_b0, 224 px", 32, 64, 28),
    ("van_b0, 224 px", 32, 160, 14),
    ("van_b0, 224 px", 32, 256, 7),
]


def _step(module: LKA, x: torch.Tensor, g: torch.Tensor) -> list[torch.Tensor]:
    """Forward and backward; returns the output and the gradients (input first)."""
    x = x.detach().requires_grad_()
    module.zero_grad(set_to_none=True)
    y = module(x)
    (y * g).sum().backward()
    return [y.detach(), x.grad] + [p.grad for p in module.parameters()]


def lka_fast_vs_plain(batch: int, channels: int, side: int, repeat: int, kernel_size: int = 21,
            dilation: int = 3) -> dict:
    """Time and check plain against fast for one shape."""
    torch.manual_seed(0)
    plain = LKA(channels, kernel_size, dilation, impl="plain")   # the authors' initialisation:
    for conv in plain.children():                                   # values of a real model's size
        init_conv_fan_out(conv)
        torch.nn.init.normal_(conv.bias, 0.0, 0.1)                  # non-zero biases: they are checked too
    fast = LKA(channels, kernel_size, dilation, impl="fast")
    fast.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(batch, channels, side, side)
    g = torch.randn_like(x)
    ref, out = _step(plain, x, g), _step(fast, x, g)
    exact = _step(copy.deepcopy(plain).double(), x.double(), g.double())[0]   # float64 reference
    err_plain = (ref[0].double() - exact).abs().max().item()
    err_fast = (out[0].double() - exact).abs().max().item()
    diff_out = (ref[0] - out[0]).abs().max().item()
    diff_gx = (ref[1] - out[1]).abs().max().item()
    rel_gw = max(((a - b).abs().max() / a.abs().max()).item() for a, b in zip(ref[2:], out[2:]))
    times = {"plain": [], "fast": []}
    for _ in range(repeat):
        for name, m in (("plain", plain), ("fast", fast)):
            times[name].append(best_time(lambda m=m: _step(m, x, g), repeats=1, warmup=0))  # one call
    best = {k: min(v) * 1e3 for k, v in times.items()}
    return {"batch": batch, "channels": channels, "side": side,
            "plan": "+".join(fast_plan(batch, side, side, fast.depthwise_convs())),
            "plain_ms": best["plain"], "fast_ms": best["fast"], "speedup": best["plain"] / best["fast"],
            "plain_median_ms": statistics.median(times["plain"]) * 1e3,
            "fast_median_ms": statistics.median(times["fast"]) * 1e3,
            "max_abs_diff_output": diff_out, "max_abs_diff_grad_input": diff_gx,
            "max_abs_output": ref[0].abs().max().item(),
            "max_abs_error_vs_float64_plain": err_plain, "max_abs_error_vs_float64_fast": err_fast,
            "max_rel_diff_grad_weights": rel_gw}


def train_speed(stem_stride: int, steps: int, batch: int = 128) -> dict:
    """Images/s of whole training steps (AdamW) of van_mini on 28x28 grey images, plain vs auto
    (best step; the JSON also holds the median)."""
    from .models import create_model

    result = {"model": f"van_mini(num_classes=10, in_chans=1, stem_stride={stem_stride})", "batch": batch}
    torch.manual_seed(0)
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    models = {}
    for impl in ("plain", "auto"):
        torch.manual_seed(0)
        models[impl] = create_model("van_mini", num_classes=10, in_chans=1, stem_stride=stem_stride, lka_impl=impl)
    models["auto"].load_state_dict(models["plain"].state_dict(), strict=True)
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-3) for k, m in models.items()}

    def step(impl):
        opts[impl].zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(models[impl](x), y)
        loss.backward()
        opts[impl].step()
        return loss.item()

    losses = {k: step(k) for k in models}        # one warm-up step each; same start, same loss
    result["first_loss_diff"] = abs(losses["plain"] - losses["auto"])
    times = {"plain": [], "auto": []}
    for _ in range(steps):
        for impl in models:
            times[impl].append(best_time(lambda impl=impl: step(impl), repeats=1, warmup=0))
    for impl, ts in times.items():
        result[f"{impl}_img_per_s"] = batch / min(ts)
        result[f"{impl}_img_per_s_median"] = batch / statistics.median(ts)
    result["speedup"] = result["auto_img_per_s"] / result["plain_img_per_s"]
    return result


def matmul_rate(dtype: torch.dtype = torch.float32, n: int = 1024, repeats: int = 5) -> float | None:
    """FLOP/s of an n x n matrix product in ``dtype`` on this CPU (best of ``repeats``); None for
    bfloat16 where oneDNN has no bf16 kernels here (it would be emulated, not the machine's rate)."""
    if dtype == torch.bfloat16 and not torch.backends.mkldnn.is_available():
        return None
    if dtype == torch.bfloat16 and not getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)():
        return None
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    seconds = best_time(lambda: torch.mm(a, b), repeats=repeats, warmup=1)
    return 2 * n ** 3 / seconds


def demo_throughput(batch: int = 128, steps: int = 5) -> list[dict]:
    """Training and inference images/s of the demo's models on 28x28 grey images (synthetic), with
    the share of the fp32 matrix-product rate each training step reaches (module docstring)."""
    from .complexity import count_macs, count_params
    from .models import DEMO_MODELS, create_model, model_family
    from .scaling import throughput

    rate = matmul_rate()
    models = {}
    for name in DEMO_MODELS:
        kw = {"image_size": 28} if model_family(name) == "vit" else {}
        torch.manual_seed(0)
        models[name] = create_model(name, num_classes=10, in_chans=1, **kw)
    train = {name: 0.0 for name in models}
    for _ in range(steps):  # round robin: the three models see the same load
        for name, model in models.items():
            train[name] = max(train[name], throughput(model, (1, 1, 28, 28), batch, train=True, steps=1, warmup=1))
    rate = max(rate, matmul_rate())
    rows = []
    for name, model in models.items():
        macs = count_macs(model, (1, 1, 28, 28))
        flops = 6 * macs * train[name]
        rows.append({"model": name, "params": count_params(model), "batch": batch, "macs_per_image": macs,
                     "train_img_per_s": train[name], "train_gflop_per_s": flops / 1e9,
                     "fraction_of_matmul_fp32": flops / rate, "matmul_fp32_gflop_per_s": rate / 1e9,
                     "inference_img_per_s": throughput(model, (1, 1, 28, 28), batch, train=False, steps=steps)})
    return rows


def scaling_figures(sizes=(16, 32, 48, 64), channels: int = 32, repeats: int = 3) -> dict:
    """Forward time and peak memory of LKA, a dense 21x21 depth-wise conv and global
    self-attention against resolution, and the fitted exponents against the number of pixels."""
    from .scaling import fit_slope, measure_scaling, scaling_modules

    modules = {k: v for k, v in scaling_modules(channels).items() if k != "self-attention (fused)"}
    rows = measure_scaling(modules, sizes, channels, repeats=repeats, count_flops_too=False)
    slopes = {}
    for method in modules:
        mine = [r for r in rows if r["method"] == method]
        px = [r["pixels"] for r in mine]
        slopes[method] = {"time": fit_slope(px, [r["seconds"] for r in mine]),
                          "memory": fit_slope(px, [r["peak_bytes"] for r in mine])}
    return {"rows": rows, "slopes": slopes, "channels": channels}


def roofline_section(peak: float, quick: bool, log=print, batch: int = 128, operators: int | None = 20) -> dict:
    """Each demo model's training step (28x28x1, ``batch``) against the roofline of this machine:
    fp32 matrix-product rate ``peak`` and the triad's bandwidth (``van_edu.roofline``); each step
    keeps the ``operators`` furthest from their roofline (None: all, e.g. to plot them)."""
    from .models import DEMO_MODELS, create_model, model_family
    from .roofline import step_roofline, triad_bandwidth

    bandwidth = triad_bandwidth(megabytes=128 if quick else 256)
    log(f"\n4. Roofline: fp32 peak {peak / 1e9:.0f} GFLOP/s (matrix product), memory {bandwidth / 1e9:.1f} GB/s "
        f"(triad), ridge at {peak / bandwidth:.1f} FLOP/byte; one AdamW step, 28x28x1, batch {batch}")
    log(f"{'model':<12} {'GFLOP':>6} {'GB moved':>9} {'measured':>9} {'unfused limit':>14} {'reached':>8} "
        f"{'fused bound':>12} {'reached':>8}")
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    out = {"bandwidth_gb_per_s": bandwidth / 1e9, "peak_gflop_per_s": peak / 1e9, "models": {}}
    for name in DEMO_MODELS:
        torch.manual_seed(0)
        kw = {"image_size": 28} if model_family(name) == "vit" else {}
        model = create_model(name, num_classes=10, in_chans=1, **kw).to(memory_format=torch.channels_last)
        r = step_roofline(model, x.contiguous(memory_format=torch.channels_last), y, peak, bandwidth,
                          steps=2 if quick else 4)
        out["models"][name] = {**r, "operators": r["operators"][:operators]}
        log(f"{name:<12} {r['flops'] / 1e9:6.1f} {r['bytes'] / 1e9:9.2f} {1e3 * r['measured_s']:7.0f}ms "
            f"{1e3 * r['unfused_roofline_s']:12.0f}ms {100 * r['fraction_of_unfused']:7.0f}% "
            f"{1e3 * r['fused_bound_s']:10.0f}ms {100 * r['fraction_of_fused']:7.0f}%")
    for name, r in out["models"].items():
        log(f"{name}: the five operators furthest from their roofline (ms per step lost, measured / limit)")
        for row in r["operators"][:5]:
            log(f"  {row['op']:<34} {1e3 * (row['measured_s'] - row['roofline_s']):7.1f} ms lost  "
                f"{1e3 * row['measured_s']:7.1f} / {1e3 * row['roofline_s']:6.1f} ms  "
                f"{row['intensity']:6.1f} FLOP/B, {row['bound']}-bound, {row['calls']} calls")
    return out


def run_bench(quick: bool = False, repeat: int = 7, train_steps: int = 8, log=print) -> dict:
    """All five measurements; prints as it goes and returns everything for JSON."""
    info = machine()
    log(f"Machine: {info['cpu']} ({info['logical_cpus']} logical CPUs), torch {info['torch']}, "
        f"{info['torch_threads']} threads")
    log(f"\n1. LKA K=21 d=3, forward + backward, float32, best of {repeat}; max|dy|, max|dgx|: fast - plain")
    log(f"{'shape [B, C, H, W]':<20} {'fast plan':<20} {'plain ms':>9} {'fast ms':>8} {'ratio':>7} "
        f"{'max|dy|':>8} {'max|dgx|':>8}")
    rows, group = [], None
    for name, b, c, h in [s for s in SHAPES if not quick or s[0].startswith("van_mini, stem stride 2")]:
        if name != group:
            log(f"-- {name}")
            group = name
        r = lka_fast_vs_plain(b, c, h, repeat)
        r["group"] = name
        rows.append(r)
        log(f"{str([b, c, h, h]):<20} {r['plan']:<20} {r['plain_ms']:9.1f} {r['fast_ms']:8.1f} "
            f"{r['speedup']:6.2f}x {r['max_abs_diff_output']:8.1e} {r['max_abs_diff_grad_input']:8.1e}")
    report = {"machine": info, "lka": rows}
    log(f"\n2. van_mini training step (AdamW, 28x28x1, batch 128), best of {train_steps}")
    report["train"] = [train_speed(2, train_steps)]
    t = report["train"][0]
    log(f"plain {t['plain_img_per_s']:.0f} img/s, auto {t['auto_img_per_s']:.0f} img/s: {t['speedup']:.2f}x")
    log("\n3. The demo's models, 28x28x1, batch 128: images/s, and the share of the machine a training step uses")
    report["models"] = demo_throughput(steps=3 if quick else 5)
    bf16 = matmul_rate(torch.bfloat16)
    report["matmul"] = {"fp32_gflop_per_s": report["models"][0]["matmul_fp32_gflop_per_s"],
                        "bf16_gflop_per_s": bf16 / 1e9 if bf16 else None}
    log(f"matrix product 1024x1024: fp32 {report['matmul']['fp32_gflop_per_s']:.0f} GFLOP/s, bf16 "
        + (f"{report['matmul']['bf16_gflop_per_s']:.0f} GFLOP/s" if bf16 else "no oneDNN bf16 kernels here"))
    log(f"{'model':<12} {'params':>9} {'MACs/img':>10} {'train img/s':>12} {'GFLOP/s':>8} {'of fp32 mm':>10} "
        f"{'inference img/s':>16}")
    for r in report["models"]:
        log(f"{r['model']:<12} {r['params']:>9,d} {r['macs_per_image'] / 1e6:>9.1f}M {r['train_img_per_s']:12.0f} "
            f"{r['train_gflop_per_s']:8.1f} {100 * r['fraction_of_matmul_fp32']:9.1f}% {r['inference_img_per_s']:16.0f}")
    by_name = {r["model"]: r for r in report["models"]}
    if "van_mini" in by_name and "resnet_mini" in by_name:
        ratio = by_name["van_mini"]["train_img_per_s"] / by_name["resnet_mini"]["train_img_per_s"]
        report["van_over_resnet_train"] = ratio
        log(f"van_mini trains at {ratio:.2f}x resnet_mini's images/s")
    report["roofline"] = roofline_section(report["matmul"]["fp32_gflop_per_s"] * 1e9, quick, log)
    log("\n5. Scaling with resolution (forward, batch 1, 32 channels)")
    report["scaling"] = scaling_figures(sizes=(16, 32, 48) if quick else (16, 32, 48, 64, 96))
    for method, s in report["scaling"]["slopes"].items():
        log(f"{method:<24} time ~ pixels^{s['time']:.2f}   peak memory ~ pixels^{s['memory']:.2f}")
    return report
