"""Rewrites of a VAN block that compute the same function, timed against the package's block.

For issue 13 (van_mini should train on a CPU at 0.78x resnet_mini's images/s). Each rewrite keeps
the block's parameters and state-dict keys and is checked against the package's block before it is
timed, so the times compare the same function:

* ``package``: ``van_edu.models.van.Block`` as the model runs it (``lka_impl="auto"``: the fast
  LKA of ``van_edu.lka_fast``, activations channels-last).
* ``folded``: both BatchNorms (batch statistics in training, the running statistics updated as
  ``nn.BatchNorm2d`` updates them) and both layer scales folded into the 1x1 convolutions, which
  run as matrix products on the ``[B*H*W, C]`` view; the attention's shortcut, the layer scale and
  the residual become one per-channel affine map of the input inside an ``addmm``. The normalised
  input, the scaled branches and the residual sums are never written to memory.
* ``chunked``: the MLP (fc1, 3x3 depth-wise conv, GELU, fc2) a few images at a time, with a
  hand-written backward that keeps only fc1's output and recomputes the depth-wise conv and GELU
  chunk by chunk, so the 4x-wide activations stay in cache (only on maps of at least
  ``CHUNK_MIN_PIXELS`` pixels; smaller stages keep the package's MLP).
* ``compiled`` (``--compile``, per block only): ``torch.compile`` of the folded block, whose
  generated C++ kernels fuse the element-wise work; it compiles each shape (tens of seconds).

Then whole training steps (AdamW, batch 128, 28x28x1) of van_mini with each rewrite and of
resnet_mini, timed in turns over several rounds, with the ratio issue 13 asks about, and each
step's minor page faults and system CPU time (memory the allocator handed back to the kernel and
the next step touches again).

    python benchmarks/block_alternatives.py                 # about 3 minutes on 2 cores
    python benchmarks/block_alternatives.py --compile       # and the compiled block (+ minutes)

This machine's timings vary between rounds (up to 20% on a shared 2-core VM), so every variant is
timed in each round, in turns, and the best and the median are printed. Take it with nothing else
running: two PyTorch jobs on the same cores slow each other down.
"""
from __future__ import annotations

import argparse
import copy
import resource
import statistics
import time
import types

import torch
import torch.nn.functional as F

from van_edu.lka_fast import fast_attention_map
from van_edu.models import create_model
from van_edu.models.van import Block, Mlp
from van_edu.runtime import machine_description

CHUNK_IMAGES = 32        # images per chunk of the chunked MLP (a 14x14x128 chunk is 3.2 MB)
CHUNK_MIN_PIXELS = 100   # smaller maps: the package's MLP (their activations fit in cache anyway)
STAGES = ((32, 14), (64, 7), (128, 4))   # van_mini's (channels, side) on 28x28 images


# --- folded: BatchNorm and layer scale inside the 1x1 convolutions ---------------------------
def bn_affine(bn: torch.nn.BatchNorm2d, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) per channel with ``bn(x) = x * scale + shift`` on rows [N, C].

    In training the batch's statistics (biased variance), and the running statistics updated as
    ``nn.BatchNorm2d`` does (unbiased variance, ``momentum``); in evaluation the running ones.
    """
    if bn.momentum is None or not bn.track_running_stats:
        raise ValueError("the folded block handles BatchNorm with a momentum and running statistics")
    if bn.training:
        var, mean = torch.var_mean(rows, dim=0, correction=0)
        with torch.no_grad():
            n, m = rows.shape[0], bn.momentum
            bn.num_batches_tracked.add_(1)
            bn.running_mean.mul_(1 - m).add_(mean, alpha=m)
            bn.running_var.mul_(1 - m).add_(var * (n / max(n - 1, 1)), alpha=m)
    else:
        mean, var = bn.running_mean, bn.running_var
    scale = bn.weight * torch.rsqrt(var + bn.eps)
    return scale, bn.bias - mean * scale


def folded_block(blk: Block, x4: torch.Tensor) -> torch.Tensor:
    """``blk(x4)`` for x4 [B, C, H, W] (channels-last), with norms and layer scales folded in."""
    if blk.drop_path.p > 0 or blk.mlp.drop.p > 0:
        raise ValueError("the folded block has no drop path or dropout")
    b, c, h, w = x4.shape
    x = x4.permute(0, 2, 3, 1).reshape(-1, c)                        # [N, C], N = B*H*W
    attn, mlp = blk.attn, blk.mlp
    ls1, ls2 = blk.layer_scale_1, blk.layer_scale_2
    # attention sub-layer: x + ls1 * (proj_2(LKA(GELU(proj_1 a))) + a), a = BN1(x) = x*s1 + t1
    s1, t1 = bn_affine(blk.norm1, x)
    w1 = attn.proj_1.weight.view(c, c)
    u = F.gelu(torch.addmm(torch.addmv(attn.proj_1.bias, w1, t1), x, (w1 * s1).t()))
    u4 = u.view(b, h, w, c).permute(0, 3, 1, 2)
    lka = attn.spatial_gating_unit
    gated = u4 * fast_attention_map(u4, lka.depthwise_convs(), lka.conv1)
    gated = gated.permute(0, 2, 3, 1).reshape(-1, c)
    w2 = attn.proj_2.weight.view(c, c)
    base = torch.addcmul(ls1 * (t1 + attn.proj_2.bias), x, 1 + ls1 * s1)   # x + ls1*(a + bias)
    x = torch.addmm(base, gated, (w2 * ls1[:, None]).t())
    # MLP sub-layer: x + ls2 * fc2(GELU(dwconv(fc1 BN2(x))))
    s2, t2 = bn_affine(blk.norm2, x)
    hidden = mlp.fc1.out_channels
    f1 = mlp.fc1.weight.view(hidden, c)
    hid = torch.addmm(torch.addmv(mlp.fc1.bias, f1, t2), x, (f1 * s2).t())
    act = F.gelu(mlp.dwconv.dwconv(hid.view(b, h, w, hidden).permute(0, 3, 1, 2)))
    act = act.permute(0, 2, 3, 1).reshape(-1, hidden)
    f2 = mlp.fc2.weight.view(c, hidden)
    x = torch.addmm(x + ls2 * mlp.fc2.bias, act, (f2 * ls2[:, None]).t())
    return x.view(b, h, w, c).permute(0, 3, 1, 2)


# --- chunked: the MLP a few images at a time -------------------------------------------------
class _ChunkedMlp(torch.autograd.Function):
    """fc1 -> 3x3 depth-wise -> GELU -> fc2 (without fc2's bias) on rows [B*H*W, C], ``chunk``
    images at a time. Saves fc1's output only; the backward recomputes the rest per chunk."""

    @staticmethod
    def forward(ctx, x, w1, b1, wdw, bdw, w2, shape, chunk):
        b, h, w = shape
        hidden, pixels = w1.shape[0], h * w
        fc1_out = x.new_empty(x.shape[0], hidden)
        out = x.new_empty(x.shape[0], w2.shape[0])
        for i in range(0, b, chunk):
            n = min(b, i + chunk) - i
            rows = slice(i * pixels, (i + n) * pixels)
            z = torch.addmm(b1, x[rows], w1.t(), out=fc1_out[rows])
            z = F.conv2d(z.view(n, h, w, hidden).permute(0, 3, 1, 2), wdw, bdw, 1, 1, 1, hidden)
            torch.mm(F.gelu(z).permute(0, 2, 3, 1).reshape(-1, hidden), w2.t(), out=out[rows])
        ctx.save_for_backward(x, w1, wdw, bdw, w2, fc1_out)
        ctx.shape, ctx.chunk = shape, chunk
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, w1, wdw, bdw, w2, fc1_out = ctx.saved_tensors
        (b, h, w), chunk = ctx.shape, ctx.chunk
        hidden, pixels = w1.shape[0], h * w
        grad_out = grad_out.contiguous()
        gx = torch.empty_like(x)
        gw1, gb1, gw2 = torch.zeros_like(w1), w1.new_zeros(hidden), torch.zeros_like(w2)
        gwdw, gbdw = torch.zeros_like(wdw), torch.zeros_like(bdw)
        for i in range(0, b, chunk):
            n = min(b, i + chunk) - i
            rows = slice(i * pixels, (i + n) * pixels)
            z4 = fc1_out[rows].view(n, h, w, hidden).permute(0, 3, 1, 2)
            pre = F.conv2d(z4, wdw, bdw, 1, 1, 1, hidden)              # recomputed, in cache
            act = F.gelu(pre).permute(0, 2, 3, 1).reshape(-1, hidden)
            gw2.addmm_(grad_out[rows].t(), act)
            g = torch.mm(grad_out[rows], w2).view(n, h, w, hidden).permute(0, 3, 1, 2)
            g = torch.ops.aten.gelu_backward(g, pre)
            gz, gk, gkb = torch.ops.aten.convolution_backward(
                g, z4, wdw, [hidden], [1, 1], [1, 1], [1, 1], False, [0, 0], hidden, [True, True, True])
            gwdw += gk
            gbdw += gkb
            gz = gz.permute(0, 2, 3, 1).reshape(-1, hidden)
            torch.mm(gz, w1, out=gx[rows])
            gw1.addmm_(gz.t(), x[rows])
            gb1 += gz.sum(0)
        return gx, gw1, gb1, gwdw, gbdw, gw2, None, None


def chunked_mlp(mlp: Mlp, x4: torch.Tensor, chunk: int = CHUNK_IMAGES) -> torch.Tensor:
    """``mlp(x4)`` for x4 [B, C, H, W], ``chunk`` images at a time (package MLP on small maps)."""
    b, c, h, w = x4.shape
    if h * w < CHUNK_MIN_PIXELS:
        return Mlp.forward(mlp, x4)
    if mlp.drop.p > 0:
        raise ValueError("the chunked MLP has no dropout")
    hidden = mlp.fc1.out_channels
    rows = x4.permute(0, 2, 3, 1).reshape(-1, c)
    conv = mlp.dwconv.dwconv
    out = _ChunkedMlp.apply(rows, mlp.fc1.weight.view(hidden, c), mlp.fc1.bias, conv.weight,
                            conv.bias, mlp.fc2.weight.view(c, hidden), (b, h, w), chunk)
    return (out + mlp.fc2.bias).view(b, h, w, c).permute(0, 3, 1, 2)


# --- wiring the rewrites into blocks and models ----------------------------------------------
def rewrite(module: torch.nn.Module, variant: str) -> torch.nn.Module:
    """A copy of ``module`` (a Block or a VAN) whose blocks compute with ``variant``."""
    module = copy.deepcopy(module)
    for m in module.modules():
        if variant == "folded" and isinstance(m, Block):
            m.forward = types.MethodType(folded_block, m)     # deepcopy rebinds a bound method
        elif variant == "chunked" and isinstance(m, Mlp):
            m.forward = types.MethodType(chunked_mlp, m)
    return module


def make_block(channels: int, seed: int = 0) -> Block:
    """A van_mini block (MLP ratio 4) with norms and layer scales away from their initial 1, 0 and
    0.01, so that folding them wrongly would show."""
    torch.manual_seed(seed)
    blk = Block(channels, 4.0)
    with torch.no_grad():
        for p in (blk.norm1.weight, blk.norm2.weight, blk.layer_scale_1, blk.layer_scale_2):
            p.uniform_(0.5, 1.5)
        for p in (blk.norm1.bias, blk.norm2.bias):
            p.uniform_(-0.5, 0.5)
    return blk


def differences(ref: torch.nn.Module, other: torch.nn.Module, x: torch.Tensor) -> dict:
    """Largest differences between ``ref(x)`` and ``other(x)`` after one forward and backward:
    output and input gradient (absolute), parameter gradients (relative to the largest entry),
    BatchNorm running statistics (absolute). Both modules must start with equal state."""
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ref(xa), other(xb)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    grads = [(p.grad - q.grad).abs().max() / p.grad.abs().max().clamp_min(1e-30)
             for p, q in zip(ref.parameters(), other.parameters())]
    stats = [(p - q).abs().max() for (n, p), (_, q) in zip(ref.named_buffers(), other.named_buffers())
             if n.endswith(("running_mean", "running_var"))]
    return {"output": (ya - yb).abs().max().item(), "input_grad": (xa.grad - xb.grad).abs().max().item(),
            "param_grad_rel": max(grads).item(), "running_stats": max(stats, default=torch.tensor(0.)).item()}


def timed_in_turns(fns: dict, rounds: int, repeats: int, kernel: dict | None = None) -> dict:
    """Seconds per call of each function: each round calls every function ``repeats`` times, in
    turns; returns {name: [seconds per call, one per round]}. When ``kernel`` is a dict, it
    receives {name: (minor page faults per call, system CPU seconds per call)} over all rounds."""
    times = {name: [] for name in fns}
    usage = {name: [0, 0.0] for name in fns}
    for fn in fns.values():
        fn()                                                          # warm-up
    for _ in range(rounds):
        for name, fn in fns.items():
            before = resource.getrusage(resource.RUSAGE_SELF)
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            times[name].append((time.perf_counter() - start) / repeats)
            after = resource.getrusage(resource.RUSAGE_SELF)
            usage[name][0] += after.ru_minflt - before.ru_minflt
            usage[name][1] += after.ru_stime - before.ru_stime
    if kernel is not None:
        calls = rounds * repeats
        kernel.update({name: (f / calls, s / calls) for name, (f, s) in usage.items()})
    return times


def _summary(seconds: list[float]) -> tuple[float, float]:
    return min(seconds), statistics.median(seconds)


def compare_blocks(batch: int, rounds: int, repeats: int, compile_too: bool, stages=STAGES) -> list[dict]:
    """Per van_mini stage shape: the rewrites' differences from the package's block and their
    forward+backward times, in turns. Prints a table; returns its rows."""
    variants = ["folded", "chunked"] + (["compiled"] if compile_too else [])
    print(f"\n1. One block, forward + backward, batch {batch}, float32, training mode; "
          f"{rounds} rounds x {repeats} calls, in turns")
    print(f"{'stage [C, side]':<16} {'variant':<9} {'max|dy|':>8} {'max|dx|':>8} {'grad rel':>8} "
          f"{'run.stats':>9} {'best ms':>8} {'median':>8} {'vs package':>10}")
    rows = []
    for channels, side in stages:
        ref = make_block(channels)
        x = torch.randn(batch, channels, side, side).contiguous(memory_format=torch.channels_last)
        modules = {"package": ref, **{v: rewrite(ref, "folded" if v == "compiled" else v) for v in variants}}
        if compile_too:
            modules["compiled"] = torch.compile(modules["compiled"], dynamic=False)
        diffs = {v: differences(copy.deepcopy(ref), copy.deepcopy(modules[v]) if v != "compiled"
                                else modules[v], x) for v in variants}
        xg = x.clone().requires_grad_()
        grad = torch.randn_like(x)

        def fwd_bwd(module, xg=xg, grad=grad):
            params = [xg, *module.parameters()]
            return lambda: torch.autograd.grad(module(xg), params, grad)

        times = timed_in_turns({v: fwd_bwd(m) for v, m in modules.items()}, rounds, repeats)
        base = _summary(times["package"])[0]
        for v in ["package", *variants]:
            best, median = _summary(times[v])
            d = diffs.get(v, {})
            cells = " ".join(f"{d[k]:8.1e}" if k in d else f"{'':>8}"
                             for k in ("output", "input_grad", "param_grad_rel"))
            stats = f"{d['running_stats']:9.1e}" if d else f"{'':>9}"
            print(f"[{channels}, {side}]{'':<{16 - len(f'[{channels}, {side}]')}} {v:<9} {cells} {stats} "
                  f"{1e3 * best:8.2f} {1e3 * median:8.2f} {base / best:9.2f}x")
            rows.append({"channels": channels, "side": side, "variant": v, "best_s": best,
                         "median_s": median, **d})
    return rows


def compare_steps(batch: int, rounds: int, repeats: int) -> dict:
    """Training steps (AdamW) of van_mini as the package builds it, with each rewrite, and of
    resnet_mini, in turns. Prints images/s and the ratios; returns {name: best images/s}."""
    torch.manual_seed(0)
    van = create_model("van_mini", num_classes=10, in_chans=1)
    models = {"van_mini": van, "van_mini folded": rewrite(van, "folded"),
              "van_mini chunked": rewrite(van, "chunked"),
              "resnet_mini": create_model("resnet_mini", num_classes=10, in_chans=1)}
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    with torch.no_grad():
        logits = {n: m.eval()(x) for n, m in models.items() if n.startswith("van")}
    for m in models.values():
        m.train()

    def step(model, opt):
        def run():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
        return run

    fns = {n: step(m, torch.optim.AdamW(m.parameters(), lr=1e-3)) for n, m in models.items()}
    kernel = {}
    times = timed_in_turns(fns, rounds, repeats, kernel)
    print(f"\n2. Training steps, AdamW, batch {batch}, 28x28x1; {rounds} rounds x {repeats} steps, in turns; "
          "minor page faults and system (kernel) CPU time per step")
    rates = {}
    for n in models:
        best, median = _summary(times[n])
        rates[n] = batch / best
        note = (f"  logits vs van_mini (eval): {(logits[n] - logits['van_mini']).abs().max().item():.1e}"
                if n in logits and n != "van_mini" else "")
        faults, system = kernel[n]
        print(f"{n:<18} best {batch / best:6.0f} images/s, median {batch / median:6.0f}, "
              f"{faults:6.0f} page faults, system {1e3 * system:4.0f} ms{note}")
    for n in [k for k in models if k.startswith("van")]:
        print(f"{n} / resnet_mini: {rates[n] / rates['resnet_mini']:.2f}x (issue 13 asks 0.78x)")
    return rates


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of timing, every variant in each")
    parser.add_argument("--repeats", type=int, default=3, help="calls per variant and round")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the folded block")
    parser.add_argument("--no-steps", action="store_true", help="blocks only, no whole training steps")
    args = parser.parse_args(argv)
    print(f"Machine: {machine_description()}, torch {torch.__version__}")
    compare_blocks(args.batch, args.rounds, args.repeats, args.compile)
    if not args.no_steps:
        compare_steps(args.batch, args.rounds, args.repeats)


if __name__ == "__main__":
    main()
