"""The training recipes: ``TrainConfig`` (everything that defines a run of ``van_edu.train.fit``),
its named presets ``TRAIN_PRESETS``, and ``check_config``, which rejects bad values before any data
is loaded. ``van_edu.train`` re-exports all three. ``PAPER_RECIPE`` records the paper's ImageNet
recipe, so that notebook 06 can set the presets beside it."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .augment import AUGMENT_PRESETS
from .errors import VanEduError
from .runtime import AMP_MODES

__all__ = ["TrainConfig", "TRAIN_PRESETS", "check_config", "PAPER_RECIPE"]

# The paper's ImageNet-1K recipe (the authors' classification code): 224x224 crops, AdamW, lr 1e-3 at
# batch 1024, cosine with 5 warm-up epochs, 300 epochs, and timm's regularisers at these strengths
# (mixup alpha 0.8, cutmix alpha 1.0, random erasing with probability 0.25, drop path per variant).
# Gradient clipping and mixed precision are not part of it as recorded here.
PAPER_RECIPE = {
    "data": "ImageNet-1K", "image_size": 224, "epochs": 300, "batch_size": 1024, "optimizer": "AdamW",
    "lr": 1e-3, "weight_decay": 0.05, "schedule": "cosine", "warmup_epochs": 5, "label_smoothing": 0.1,
    "randaugment": True, "mixup": 0.8, "cutmix": 1.0, "random_erasing": 0.25,
    "drop_path": {"van_b0": 0.1, "van_b1": 0.1, "van_b2": 0.1, "van_b3": 0.2},
}


@dataclass
class TrainConfig:
    """Everything that defines a training run; the presets in `TRAIN_PRESETS` are named instances."""

    epochs: int = 10
    batch_size: int = 128          # global batch (split across DDP ranks)
    lr: float = 2e-3               # peak AdamW learning rate
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0     # linear warm-up, then cosine decay to ~0, stepped per iteration
    label_smoothing: float = 0.1
    grad_clip: float | None = 1.0  # max global gradient norm, None = off
    augment: str = "cpu"           # a key of van_edu.data.AUGMENT_PRESETS
    amp: str = "auto"              # "auto" (cuda: bf16 or fp16; elsewhere off), "native" (bf16 where the
                                   # hardware has it, CUDA or CPU; else off), "bf16", "fp16", "off"
    channels_last: bool = False
    compile: bool = False          # torch.compile the model
    seed: int = 0
    device: str = "auto"           # "auto" -> cuda, then mps, then cpu
    eval_batch_size: int = 512
    eval_every: int = 1            # score the test data after every this many epochs, and after the last
    progress: bool = True          # tqdm progress bar


TRAIN_PRESETS: dict[str, TrainConfig] = {
    # The CPU demo: the bundled Fashion-MNIST, light augmentation, float32, channels-last (oneDNN's
    # convs are ~20% faster so). Batch 64 at lr 4e-3 beat batch 128 at 2e-3 by 3.7 points after two
    # short epochs (van_mini, 10k images; README, "The demo's recipe").
    "cpu": TrainConfig(epochs=2, batch_size=64, lr=4e-3, warmup_epochs=0.5, augment="cpu", amp="off",
                       channels_last=True),
    # Segmentation on the scattered garments (van-edu compare --task segmentation): crops and flips
    # (the masks move with the pixels), no label smoothing on pixels, bf16 autocast where the hardware
    # has it ("native"; scores are float32). Measured on van_mini's FPN (benchmarks/segmentation_recipe.py;
    # README, "Segmentation: the recipe"): 0.594 test mIoU after 8 epochs in float32 (FPN 32, batch 32,
    # lr 4e-3), 0.595 the same under bf16; 10 epochs under bf16 0.609 at batch 32 and lr 4e-3, 0.613 at
    # batch 64 and lr 8e-3, which also trains more canvases per second; 9 epochs of that keep the
    # three-model default near 20 minutes. Scored in batches of 64: van_mini's evaluation of 512
    # canvases took 5.6 s so against 10.5 s in batches of 512 (one thread; the activations of a large
    # batch do not stay in the caches). Tested after epochs 3, 6 and 9 only: scoring the 2,000 test
    # canvases took 9.4 + 2.9 + 5.3 s for the three models (2 threads), 2.6 of the default's minutes
    # if done after every epoch.
    "seg_cpu": TrainConfig(epochs=9, batch_size=64, lr=8e-3, warmup_epochs=0.5, augment="cpu", amp="native",
                           label_smoothing=0.0, channels_last=True, eval_batch_size=64, eval_every=3),
    # Detection on the scattered garments (van-edu compare --task detection): CenterNet's loss. 6
    # epochs scored test mAP50 0.652 (van_mini), 0.623 (resnet_mini), 0.391 (vit_mini) on seed 0 but
    # took 22.8 minutes for the three on this 2-core CPU; 5 epochs keep the default within 20.
    "det_cpu": TrainConfig(epochs=5, batch_size=32, lr=2e-3, warmup_epochs=0.5, augment="none", amp="off",
                           label_smoothing=0.0, channels_last=True),
    # Colab or a workstation GPU: longer, stronger augmentation, mixed precision, channels-last.
    "gpu": TrainConfig(epochs=30, batch_size=256, lr=2e-3, warmup_epochs=2.0, augment="gpu",
                       amp="auto", channels_last=True, eval_batch_size=1024),
}


def check_config(config: TrainConfig, train_size: int | None = None) -> None:
    """Reject values that would fail late or silently do something else; ``train_size`` (when
    known) bounds the batch size. Cheap: callers run it before loading any data."""
    problems = []
    epochs_ok = isinstance(config.epochs, int) and not isinstance(config.epochs, bool) and config.epochs >= 1
    if not epochs_ok:
        problems.append(f"epochs={config.epochs!r} (expected an int >= 1)")
    if not (isinstance(config.batch_size, int) and config.batch_size >= 1):
        problems.append(f"batch_size={config.batch_size!r} (expected an int >= 1)")
    elif train_size is not None and config.batch_size > train_size:
        problems.append(f"batch_size={config.batch_size} is larger than the training set "
                        f"({train_size} images; expected at most that, since incomplete batches are dropped)")
    if not (config.lr > 0 and math.isfinite(config.lr)):
        problems.append(f"lr={config.lr!r} (expected a finite number > 0)")
    if not (config.weight_decay >= 0 and math.isfinite(config.weight_decay)):
        problems.append(f"weight_decay={config.weight_decay!r} (expected a finite number >= 0)")
    if epochs_ok and not 0 <= config.warmup_epochs <= config.epochs:
        problems.append(f"warmup_epochs={config.warmup_epochs!r} (expected between 0 and epochs)")
    if not 0 <= config.label_smoothing < 1:
        problems.append(f"label_smoothing={config.label_smoothing!r} (expected in [0, 1))")
    if config.grad_clip is not None and not config.grad_clip > 0:
        problems.append(f"grad_clip={config.grad_clip!r} (expected > 0 or None)")
    if config.augment not in AUGMENT_PRESETS:
        problems.append(f"augment={config.augment!r} (expected one of {sorted(AUGMENT_PRESETS)})")
    if config.amp not in AMP_MODES:
        problems.append(f"amp={config.amp!r} (expected one of {AMP_MODES})")
    if not (isinstance(config.eval_batch_size, int) and config.eval_batch_size >= 1):
        problems.append(f"eval_batch_size={config.eval_batch_size!r} (expected an int >= 1)")
    if isinstance(config.eval_every, bool) or not (isinstance(config.eval_every, int) and config.eval_every >= 1):
        problems.append(f"eval_every={config.eval_every!r} (expected an int >= 1: test after every this many epochs)")
    if isinstance(config.seed, bool) or not isinstance(config.seed, int) or not 0 <= config.seed < 2**63:
        problems.append(f"seed={config.seed!r} (expected a whole number >= 0 and < 2**63)")
    if problems:
        raise VanEduError("bad TrainConfig: " + "; ".join(problems))
