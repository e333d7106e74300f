"""The arithmetic of stride-1 convolutions: the padding that keeps the size, and the receptive
field of a stack. A leaf: it imports nothing of the course, so ``lka`` (the module and its maths)
and ``lka_fast`` (the same LKA through matrix products) both build on it without importing each
other's maths."""
from __future__ import annotations

__all__ = ["same_padding", "symmetric_padding", "stack_receptive_field"]


def same_padding(kernel: int, dilation: int = 1) -> int:
    """The zero padding on each side that keeps the size under a stride-1 convolution: d (k - 1) / 2.

    A kernel of k taps d apart spans d (k - 1) + 1 pixels, so it needs d (k - 1) pixels of padding
    in all. When that is odd no symmetric padding keeps the size; the answer is then the smaller
    side, the one PyTorch's ``padding="same"`` puts before the image (the odd pixel goes after).

    >>> same_padding(5), same_padding(7, 3)
    (2, 9)
    """
    return dilation * (kernel - 1) // 2


def symmetric_padding(kernel: int, dilation: int = 1) -> int | None:
    """``same_padding`` when the same padding on both sides keeps the size, else None."""
    return same_padding(kernel, dilation) if dilation * (kernel - 1) % 2 == 0 else None


def stack_receptive_field(layers) -> int:
    """Receptive field of stacked stride-1 convolutions given as (kernel, dilation) pairs.

    Each layer widens the field by dilation * (kernel - 1): 1 + sum(d_i (k_i - 1)).
    """
    return 1 + sum(d * (k - 1) for k, d in layers)
