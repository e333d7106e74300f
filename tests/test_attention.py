"""van_edu.models.GlobalSelfAttention: the textbook formula, single- and multi-head, checked against
PyTorch's own nn.MultiheadAttention with the same weights, and its explicit and fused paths equal."""
import pytest
import torch
from torch import nn

from van_edu.errors import VanEduError
from van_edu.models import GlobalSelfAttention


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_equals_pytorchs_multihead_attention_with_the_same_weights(heads):
    torch.manual_seed(0)
    ours = GlobalSelfAttention(8, heads=heads).eval()
    theirs = nn.MultiheadAttention(8, heads, batch_first=True).eval()
    with torch.no_grad():
        theirs.in_proj_weight.copy_(ours.qkv.weight)
        theirs.in_proj_bias.copy_(ours.qkv.bias)
        theirs.out_proj.weight.copy_(ours.proj.weight)
        theirs.out_proj.bias.copy_(ours.proj.bias)
    x = torch.randn(2, 8, 5, 6)
    tokens = x.flatten(2).transpose(1, 2)                                   # [B, N, C]
    out, w = theirs(tokens, tokens, tokens, need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(ours(x), out.transpose(1, 2).reshape(x.shape))
    weights = ours.weights(x)
    assert weights.shape == ((2, 30, 30) if heads == 1 else (2, heads, 30, 30))
    torch.testing.assert_close(weights, w[:, 0] if heads == 1 else w)
    fused = GlobalSelfAttention(8, heads=heads, fused=True)
    fused.load_state_dict(ours.state_dict())
    torch.testing.assert_close(fused(x), ours(x))


def test_heads_must_divide_the_channels():
    for bad in (3, 0, -2):
        with pytest.raises(VanEduError, match="heads"):
            GlobalSelfAttention(8, heads=bad)
