"""The course's GPU check, in one command: does every CUDA path work, and how fast is it?

    python benchmarks/gpu_check.py             # on a machine with a CUDA GPU: at most ~8 minutes
    python benchmarks/gpu_check.py --dry-run   # anywhere: the same code on tiny sizes (CI runs it)

No network: it uses only the bundled Fashion-MNIST (resized to 32 px, as CIFAR-10 would be), so it
runs on a lent machine that reaches nothing. It writes ``benchmarks/results/gpu_check.json``
(``--out`` to change; a dry run writes ``runs/gpu_check_dry.json`` so it never overwrites measured
figures) and prints one line per check. Exit status 1 when any check failed.

1. Checks of the training paths that only a GPU exercises, each through ``van_edu.train.fit`` or
   the real modules: bf16 autocast (logits close to float32, finite training), fp16 autocast with
   the gradient scaler (the checkpoint records a live scale), channels-last (outputs and gradients
   equal to contiguous), ``torch.compile`` (equal logits, a short compiled run), and DDP in one
   process over NCCL (with SyncBatchNorm; gloo on the CPU).
2. LKA, fast (matrix products) against plain (three ``nn.Conv2d``) on the device: equal outputs,
   forward+backward times and their ratio, plain and fast timed side by side.
3. ``van_cifar``, ``vit_cifar`` and ``resnet_cifar`` trained for a few epochs with the ``gpu``
   preset: test accuracy, training time and images/s.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

import torch

from van_edu.data import load_image_dataset, normalize
from van_edu.lka import LKA
from van_edu.models import build_model
from van_edu.runtime import best_time, machine, pick_device
from van_edu.train import TRAIN_PRESETS, fit

MODELS = ("van_cifar", "vit_cifar", "resnet_cifar")
LKA_SHAPES = [(128, 64, 32), (128, 128, 16), (128, 256, 8), (32, 32, 56), (32, 160, 14)]  # (B, C, side)


def _sizes(dry_run: bool) -> dict:
    if dry_run:
        return {"train": 128, "test": 64, "check_train": 64, "epochs": 1, "batch": 32,
                "lka_shapes": [(2, 8, 8)], "models": ("van_mini", "vit_mini", "resnet_mini"), "repeats": 1}
    return {"train": None, "test": None, "check_train": 4096, "epochs": 3, "batch": 256,
            "lka_shapes": LKA_SHAPES, "models": MODELS, "repeats": 10}


def _config(device: torch.device, sizes: dict, **changes):
    base = TRAIN_PRESETS["gpu"]
    fields = {"device": str(device), "epochs": 1, "batch_size": sizes["batch"], "warmup_epochs": 0.0,
              "progress": False, "amp": base.amp if device.type == "cuda" else "off", **changes}
    return replace(base, **fields)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative difference ||a - b|| / ||b||."""
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


class _NoTF32:
    """Full float32 for comparisons (cuDNN's convs default to TF32 on Ampere and later)."""

    def __enter__(self):
        self.saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self.saved


# ----------------------------------------------------------------------------- 1. the checks
def check_bf16(device, data, test, sizes, out):
    torch.manual_seed(0)
    model = build_model(sizes["models"][0], data).to(device).eval()
    x = normalize(data.images[:16]).to(device)
    with torch.no_grad(), _NoTF32():
        ref = model(x)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            low = model(x)
    rel = _rel(low, ref)
    result = fit(build_model(sizes["models"][0], data), data, test, _config(device, sizes, amp="bf16"))
    loss = result.history[-1]["train_loss"]
    ok = rel < 0.05 and math.isfinite(loss)
    return ok, f"logits bf16 vs fp32: relative difference {rel:.2e} (< 5e-2); training loss {loss:.4f}"


def check_fp16_scaler(device, data, test, sizes, out):
    if device.type != "cuda":
        return None, "fp16 autocast needs CUDA's gradient scaler"
    folder = out / "fp16"
    result = fit(build_model(sizes["models"][0], data), data, test, _config(device, sizes, amp="fp16"), out_dir=folder)
    scaler = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True)["scaler"]
    loss = result.history[-1]["train_loss"]
    ok = bool(scaler) and scaler.get("scale", 0) > 0 and math.isfinite(loss)
    return ok, f"gradient scaler state {dict(scaler)}; training loss {loss:.4f}"


def check_channels_last(device, data, test, sizes, out):
    torch.manual_seed(0)
    plain = build_model(sizes["models"][0], data).to(device).eval()  # eval: no drop path, fixed BatchNorm
    fast = build_model(sizes["models"][0], data).to(device).to(memory_format=torch.channels_last).eval()
    fast.load_state_dict(plain.state_dict())
    x = normalize(data.images[:8]).to(device)
    with _NoTF32():
        a = plain(x)
        b = fast(x.contiguous(memory_format=torch.channels_last))
        a.square().mean().backward()
        b.square().mean().backward()
    grads = _rel(torch.cat([q.grad.flatten() for q in fast.parameters()]),
                 torch.cat([p.grad.flatten() for p in plain.parameters()]))
    ok = _rel(b, a) < 1e-4 and grads < 1e-4
    return ok, f"outputs relative difference {_rel(b, a):.1e}, all gradients {grads:.1e} (both < 1e-4)"


def check_compile(device, data, test, sizes, out):
    if sizes["dry_run"]:
        return None, "dry run: torch.compile takes minutes on a CPU"
    torch.manual_seed(0)
    model = build_model(sizes["models"][0], data).to(device).eval()
    x = normalize(data.images[:16]).to(device)
    start = time.perf_counter()
    with torch.no_grad(), _NoTF32():
        ref = model(x)
        got = torch.compile(model)(x)
    compile_seconds = time.perf_counter() - start
    result = fit(build_model(sizes["models"][0], data), data, test, _config(device, sizes, compile=True))
    rel = _rel(got, ref)
    ok = rel < 1e-3 and math.isfinite(result.history[-1]["train_loss"])
    return ok, (f"compiled logits relative difference {rel:.1e}; first compiled call {compile_seconds:.1f} s; "
                f"a compiled epoch {result.train_seconds:.1f} s at {result.images_per_second:.0f} images/s")


def check_ddp(device, data, test, sizes, out):
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.manual_seed(0)
    alone = fit(build_model(sizes["models"][0], data), data, test, _config(device, sizes, amp="off"))
    port = 29500 + os.getpid() % 1000
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        ddp = fit(build_model(sizes["models"][0], data), data, test, _config(device, sizes, amp="off"))
    finally:
        dist.destroy_process_group()
    gap = abs(ddp.history[-1]["train_loss"] - alone.history[-1]["train_loss"])
    ok = math.isfinite(ddp.history[-1]["train_loss"]) and gap < 0.05
    return ok, (f"{backend}, 1 process: training loss {ddp.history[-1]['train_loss']:.4f} vs "
                f"{alone.history[-1]['train_loss']:.4f} without DDP (gap {gap:.1e} < 5e-2)")


CHECKS = {"bf16_autocast": check_bf16, "fp16_autocast_scaler": check_fp16_scaler,
          "channels_last": check_channels_last, "compile": check_compile, "ddp_one_process": check_ddp}


def run_checks(device, data, test, sizes, out, log) -> list[dict]:
    rows = []
    for name, check in CHECKS.items():
        start = time.perf_counter()
        try:
            ok, detail = check(device, data, test, sizes, out)
        except Exception as err:  # a broken path is a finding, not a crash of the whole check
            ok, detail = False, f"{type(err).__name__}: {err} | {traceback.format_exc(limit=3).splitlines()[-3]}"
        status = "skipped" if ok is None else "passed" if ok else "failed"
        rows.append({"check": name, "status": status, "detail": detail,
                     "seconds": round(time.perf_counter() - start, 2)})
        log(f"  {name:22s} {status:8s} {detail}")
    return rows


# ----------------------------------------------------------------------------- 2. LKA, fast vs plain
def lka_speed(device, sizes, log) -> list[dict]:
    rows = []
    for b, c, side in sizes["lka_shapes"]:
        torch.manual_seed(0)
        plain = LKA(c, impl="plain").to(device)
        fast = LKA(c, impl="fast").to(device)
        fast.load_state_dict(plain.state_dict())
        x = torch.randn(b, c, side, side, device=device)
        g = torch.randn_like(x)

        def step(m, x=x, g=g):
            xi = x.detach().requires_grad_()
            (m(xi) * g).sum().backward()
            return xi.grad

        with _NoTF32():
            same = _rel(fast(x), plain(x))
        t_plain = best_time(lambda m=plain: step(m), sizes["repeats"], device)
        t_fast = best_time(lambda m=fast: step(m), sizes["repeats"], device)
        rows.append({"shape": [b, c, side, side], "plain_ms": 1e3 * t_plain, "fast_ms": 1e3 * t_fast,
                     "plain_over_fast": t_plain / t_fast, "relative_difference": same})
        log(f"  LKA {b}x{c}x{side}x{side}: plain {1e3 * t_plain:.2f} ms, fast {1e3 * t_fast:.2f} ms "
            f"(plain/fast {t_plain / t_fast:.2f}); outputs differ by {same:.1e}")
    return rows


# ----------------------------------------------------------------------------- 3. training
def train_models(device, data, test, sizes, log) -> list[dict]:
    rows = []
    for name in sizes["models"]:
        torch.manual_seed(0)
        model = build_model(name, data)
        config = _config(device, sizes, epochs=sizes["epochs"], warmup_epochs=min(1.0, sizes["epochs"] / 3))
        result = fit(model, data, test, config)
        rows.append({"model": name, "params": sum(p.numel() for p in model.parameters()),
                     "epochs": sizes["epochs"], "train_samples": len(data), "test_samples": len(test),
                     "batch_size": config.batch_size, "amp": config.amp, "test_accuracy": result.test_accuracy,
                     "train_seconds": result.train_seconds, "images_per_second": result.images_per_second})
        log(f"  {name}: {result.test_accuracy:.2%} test accuracy after {sizes['epochs']} epochs, "
            f"{result.train_seconds:.1f} s, {result.images_per_second:.0f} images/s")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on any device (what CI runs)")
    parser.add_argument("--device", default="auto", help="auto (default), cuda, cpu")
    parser.add_argument("--epochs", type=int, help="epochs of the training part (default 3; 1 in a dry run)")
    parser.add_argument("--out", type=Path, help="the JSON to write")
    args = parser.parse_args(argv)
    try:
        device = pick_device(args.device)
    except ValueError as err:
        print(f"gpu_check: {err}", file=sys.stderr)
        return 2
    if device.type != "cuda" and not args.dry_run:
        print("gpu_check: no CUDA GPU here (expected one; on a CPU, run with --dry-run)", file=sys.stderr)
        return 2
    sizes = {**_sizes(args.dry_run), "dry_run": args.dry_run}
    if args.epochs:
        sizes["epochs"] = args.epochs
    out = args.out or Path("runs/gpu_check_dry.json" if args.dry_run else "benchmarks/results/gpu_check.json")
    start = time.perf_counter()
    info = {**machine(), "device": str(device), "cuda": torch.version.cuda, "dry_run": args.dry_run,
            "date": datetime.date.today().isoformat()}
    print(f"gpu_check on {info.get('gpu', info['cpu'])}, torch {info['torch']}{' (dry run)' if args.dry_run else ''}")
    load = dict(image_size=32, device="cpu", seed=0)
    data = load_image_dataset("fashion_mnist", "train", samples=sizes["train"], **load)
    test = load_image_dataset("fashion_mnist", "test", samples=sizes["test"], **load)
    check_data = load_image_dataset("fashion_mnist", "train", samples=sizes["check_train"], **load)
    with tempfile.TemporaryDirectory() as tmp:
        print("1. training paths")
        checks = run_checks(device, check_data, test, sizes, Path(tmp), print)
    print("2. LKA, fast vs plain (forward + backward)")
    lka = lka_speed(device, sizes, print)
    print(f"3. training with the gpu preset ({sizes['epochs']} epochs, Fashion-MNIST at 32 px)")
    training = train_models(device, data, test, sizes, print)
    report = {"machine": info, "checks": checks, "lka": lka, "training": training,
              "wall_seconds": round(time.perf_counter() - start, 1)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    failed = [c["check"] for c in checks if c["status"] == "failed"]
    print(f"wrote {out} in {report['wall_seconds']:.0f} s; " + (f"FAILED: {', '.join(failed)}" if failed else "no check failed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
