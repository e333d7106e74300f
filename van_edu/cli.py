"""The ``van-edu`` command (also ``python -m van_edu``).

Sub-commands: ``models``, ``table``, ``train``, ``compare``, ``bench``, ``grade``. Bad input prints one line saying
what was wrong and what was expected, and exits with status 2; no traceback.
"""
from __future__ import annotations

import argparse
import json
import math
import sys

from .errors import VanEduError


def _cmd_models(args) -> int:
    import torch

    from .complexity import count_params
    from .models import create_model, list_models, model_family

    print(f"{'name':18s} {'family':7s} {'params (10 classes, 1 channel)':>32s}")
    for name in list_models():
        with torch.device("meta"):  # a ViT at its own image size: its position embedding depends on it
            model = create_model(name, num_classes=10, in_chans=1)
        size = getattr(model.config, "image_size", None) if model_family(name) == "vit" else None
        shown = f"{name} ({size} px)" if size else name
        print(f"{shown:18s} {model_family(name):7s} {count_params(model):>32,d}")
    return 0


def _cmd_table(args) -> int:
    from .complexity import format_table, table2, variant_table

    names = args.variants or None
    rows = variant_table(names, resolution=args.resolution, macs=not args.no_macs)
    table2_rows = table2()
    if args.json:
        print(json.dumps({"table5": rows, "table2": table2_rows}, indent=2))
        return 0
    print(f"VAN variants (Table 5): parameters with a 1000-class head, multiply-adds at {args.resolution}x{args.resolution}")
    print(format_table(rows, [("name", "variant", "s"), ("params", "params", ",d"),
                              ("paper_params_m", "paper (M)", ".1f"), ("gmacs", "GMACs", ".3f"),
                              ("paper_gflops", "paper GFLOPs", ".1f"), ("paper_top1", "paper top-1 %", ".1f")]))
    print("\nTable 2: parameters of a 21x21 convolution (biases ignored), counted from modules")
    print(format_table(table2_rows, [("C", "C", "d"), ("standard", "standard", ",d"),
                                     ("paper_standard", "paper", ",d"), ("mobilenet", "MobileNet", ",d"),
                                     ("paper_mobilenet", "paper", ",d"), ("van", "VAN (K=21,d=3)", ",d"),
                                     ("paper_van", "paper", ",d")]))
    return 0


def _samples(text: str):
    """A count ("5000", "1e3") or a fraction in (0, 1] ("0.1"; "1.0" is the whole split)."""
    expected = f"expected a count like 5000 (at least 1) or a fraction in (0, 1] like 0.1, got {text!r}"
    try:
        return _at_least_one(int(text), expected)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(expected) from None
    if 0.0 < value <= 1.0:
        return value
    if value > 1.0 and value.is_integer():
        return int(value)
    raise argparse.ArgumentTypeError(expected)


def _at_least_one(value: int, expected: str) -> int:
    if value < 1:
        raise argparse.ArgumentTypeError(expected)
    return value


def _positive_int(text: str) -> int:
    """A whole number >= 1 (epochs, batch size, pixels, repeats, threads)."""
    expected = f"expected a whole number >= 1, got {text!r}"
    try:
        return _at_least_one(int(text), expected)
    except ValueError:
        raise argparse.ArgumentTypeError(expected) from None


def _seed(text: str) -> int:
    """A seed: a whole number in [0, 2**63), what torch's and numpy's generators both take."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0 and < 2**63, got {text!r}")
    return value


def _learning_rate(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0 such as 0.004, got {text!r}")
    return value


def _add_train(sub) -> None:
    from .compare import COMPARE_PRESETS
    from .train import TRAIN_PRESETS

    demo = COMPARE_PRESETS["cpu"]
    p = sub.add_parser("train", help="train one model; writes results.json, history.json, checkpoint.pt")
    p.add_argument("--model", default=demo.models[0], help=f"a name from `van-edu models` (default {demo.models[0]})")
    p.add_argument("--dataset", default=demo.dataset,
                   help=f"a known name, a Hub id or a local folder (default {demo.dataset}, bundled)")
    p.add_argument("--task", choices=["segmentation", "detection"],
                   help="for scattered_garments: train a segmenter on its masks (the default) or a detector on its boxes")
    p.add_argument("--preset", choices=sorted(TRAIN_PRESETS),
                   help="training recipe (default cpu; seg_cpu or det_cpu on scattered_garments)")
    p.add_argument("--epochs", type=_positive_int, help="override the preset's epochs")
    p.add_argument("--batch-size", type=_positive_int, help="override the preset's global batch size")
    p.add_argument("--lr", type=_learning_rate, help="override the preset's peak learning rate")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the subsets, weights and batches (default 0)")
    p.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    p.add_argument("--image-size", type=_positive_int, help="resize images to this side")
    p.add_argument("--train-samples", type=_samples,
                   help="a seeded subset of the training split (a count, or a fraction such as 0.1)")
    p.add_argument("--test-samples", type=_samples,
                   help="a seeded subset of the test split (a count, or a fraction such as 0.1)")
    p.add_argument("--out", default="runs/train", help="output folder (default runs/train)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    from dataclasses import replace

    from .compare import COMPARE_PRESETS, load_splits, score_line, train_one
    from .fileio import check_output_dir
    from .models import model_family
    from .runtime import pick_device
    from .sources import DATASETS, known_name
    from .train import TRAIN_PRESETS, check_config

    model_family(args.model)  # what can be checked without the data fails before it is loaded
    over = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr),
                              ("device", args.device)) if v is not None}
    spec = DATASETS.get(known_name(args.dataset))
    tasks = spec.tasks if spec is not None else ("classification",)
    if args.task and args.task not in tasks:
        has = "masks only (expected --task segmentation)" if tasks == ("segmentation",) else \
            "a class per image (expected no --task)"
        raise VanEduError(f"--task {args.task} needs a data set with masks and boxes, such as scattered_garments; "
                          f"{args.dataset!r} has {has}")
    task = (args.task or "segmentation") if tasks != ("classification",) else None
    preset = args.preset or {"segmentation": "seg_cpu", "detection": "det_cpu"}.get(task, "cpu")
    config = replace(TRAIN_PRESETS[preset], seed=args.seed, progress=not args.no_progress, **over)
    check_config(config)
    pick_device(config.device)
    check_output_dir(args.out, "--out")
    train, test = load_splits(args.dataset, args.train_samples, args.test_samples, args.image_size,
                              seed=args.seed, device=None, task=task)
    # masks or boxes: a Semantic FPN or a CenterNet on the model's pyramid, sized as `compare --task ...` does
    options = COMPARE_PRESETS[train.task].model_options(args.model) if train.task != "classification" else {}
    r = train_one(args.model, train, test, config, args.out, resume=args.resume, dataset=args.dataset,
                  model_options=options)
    print(f"{r['model']}: {score_line(r)} after {r['epochs']} epochs, "
          f"{r['train_seconds']:.0f} s of training ({r['images_per_second']:.0f} images/s on {r['device']}); "
          f"results in {args.out}/results.json")
    return 0


def _add_compare(sub) -> None:
    from .compare import COMPARE_PRESETS

    p = sub.add_parser("compare", help="the main job: VAN vs ViT vs ResNet, same data and recipe; writes a report")
    p.add_argument("--task", choices=["classification", "segmentation", "detection"],
                   help="classification (default); segmentation or detection: the models as backbones under a "
                        "Semantic FPN or a CenterNet, on the scattered garments (the presets of those names)")
    p.add_argument("--preset", choices=sorted(COMPARE_PRESETS),
                   help="cpu: bundled Fashion-MNIST (the default); segmentation, detection: scattered garments (the "
                        "default with that --task); cifar10, imagenette: GPU")
    p.add_argument("--out", default="runs/compare", help="output folder (default runs/compare)")
    p.add_argument("--seeds", type=_seed, nargs="+", help="override the preset's seeds (distinct, >= 0)")
    p.add_argument("--epochs", type=_positive_int, help="override the preset's epochs")
    p.add_argument("--train-samples", type=_samples, help="override the preset's training subset")
    p.add_argument("--test-samples", type=_samples, help="override the preset's test subset")
    p.add_argument("--models", nargs=3, metavar=("VAN", "VIT", "RESNET"), help="override the three models")
    p.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    p.add_argument("--export", metavar="DIR", help="also copy the report and the first seed's weights to DIR "
                   "(the notebooks read notebooks/assets/compare)")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args) -> int:
    from dataclasses import replace

    from .compare import COMPARE_PRESETS, check_setup, compare
    from .fileio import check_output_dir
    from .report import check_export, export_assets

    preset = args.preset or (args.task if args.task in ("segmentation", "detection") else "cpu")
    setup = COMPARE_PRESETS[preset]
    if args.task:
        setup = replace(setup, task=args.task)
    over = {k: v for k, v in (("seeds", tuple(args.seeds or ())), ("models", tuple(args.models or ())),
                              ("train_samples", args.train_samples), ("test_samples", args.test_samples))
            if v not in (None, ())}
    setup = replace(setup, **over)
    more = {k: v for k, v in (("device", args.device), ("epochs", args.epochs)) if v is not None}
    check_setup(setup, **more)            # all of it before the first model trains, --export too
    check_output_dir(args.out, "--out")
    if args.export:
        check_export(args.out, args.export, "--export")
    compare(setup, args.out, **more)
    if args.export:
        print(f"exported to {export_assets(args.out, args.export, seed=setup.seeds[0])}")
    return 0


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="speed figures: fast vs plain LKA, the demo's models, scaling")
    p.add_argument("--quick", action="store_true", help="fewer shapes and sizes (about a minute)")
    p.add_argument("--repeat", type=_positive_int, default=7, help="timed runs per LKA shape (best is kept)")
    p.add_argument("--threads", type=_positive_int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args) -> int:
    import torch

    from .bench import run_bench
    from .fileio import atomic_write_text, check_output_file

    if args.json:                        # before minutes of measuring, not after
        check_output_file(args.json, "--json")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    report = run_bench(quick=args.quick, repeat=args.repeat)
    if args.json:
        path = check_output_file(args.json, "--json")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(report, indent=2))
        print(f"\nwrote {args.json}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line: what was wrong, then where the options are listed."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="van-edu", description="The Visual Attention Network course.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list the models create_model() knows")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("table", help="VAN B0-B6 and Table 2, computed beside the paper's values")
    p.add_argument("--variants", nargs="*", help="e.g. van_b0 van_b1 (default: B0-B6)")
    p.add_argument("--resolution", type=_positive_int, default=224, help="input side for multiply-adds (default 224)")
    p.add_argument("--no-macs", action="store_true", help="skip multiply-adds (faster)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=_cmd_table)

    _add_train(sub)
    _add_compare(sub)
    _add_bench(sub)
    from .grading.cli import add_grade_command
    add_grade_command(sub)
    return parser


def main(argv=None) -> int:
    """Run one command; returns the exit status (2 for bad input, with one line on stderr)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:           # --help (0) or a usage error (2, already printed)
        return done.code if isinstance(done.code, int) else 2
    try:
        return int(args.func(args) or 0)
    except VanEduError as err:
        return _fail(args.command, err)
    except OSError as err:               # a path that cannot be read or written, a full disk, ...
        return _fail(args.command, f"{err} (expected files and folders that can be read and written)")
    except MemoryError as err:
        return _fail(args.command, f"out of memory ({type(err).__name__}: {err}); expected a smaller "
                     "--batch-size, --image-size or --train-samples")
    except KeyboardInterrupt:
        print(f"van-edu {args.command}: interrupted", file=sys.stderr)
        return 130


def _fail(command: str, message) -> int:
    """One line on stderr, exit status 2."""
    text = " ".join(str(message).split())            # one line, even if a message spans several
    print(f"van-edu {command}: error: {text}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
