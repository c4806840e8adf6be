"""The end-to-end phase's loss, KL(dense ‖ adaptive) over the vocabulary, computed through the output head a few
tokens at a time.

Done the plain way (both models' logits, two log-softmaxes, the sum, then autograd's backward through each, over
1,024 tokens × 49,152 logits, 200 MB a tensor) a SmolLM2-135M tuning step took 9.35 s; this way 7.94 s
(`benchmarks/experiments/tune_step_ab.py`). Here each chunk's logits are made, used and dropped while they are
still in cache, the gradient with respect to the student's final hidden states is formed in the same pass
(softmax(student) − softmax(teacher), back through the head), and no logits tensor is ever held whole. Same loss and
gradient, up to rounding.
"""

from __future__ import annotations

import torch
from torch import nn

CHUNK = 64  # tokens per chunk: [64, V] logits (12.6 MB for V ≈ 50k) stay in a 32 MB cache; 128 and 256 ran slower


class _HeadKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student: torch.Tensor, teacher: torch.Tensor, weight: torch.Tensor, bias, chunk: int):
        total = student.new_zeros(())
        grad = torch.empty_like(student)
        for start in range(0, len(student), chunk):
            rows = slice(start, start + chunk)
            s = torch.nn.functional.linear(student[rows], weight, bias).log_softmax(-1)
            t = torch.nn.functional.linear(teacher[rows], weight, bias).log_softmax(-1)
            p = t.exp()
            total += (p * (t - s)).sum()
            grad[rows] = (s.exp_() - p) @ weight  # d KL / d student logits, through the head
        ctx.save_for_backward(grad)
        return total / len(student)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * (grad_output / len(grad)), None, None, None, None


def head_kl(teacher: torch.Tensor, student: torch.Tensor, head: nn.Linear, chunk: int = CHUNK) -> torch.Tensor:
    """Mean per-token KL(softmax(head(teacher)) ‖ softmax(head(student))) from final hidden states [..., D].
    Only `student` gets a gradient: the head and the teacher are frozen."""
    if head.weight.requires_grad:
        raise ValueError("head_kl trains no output head: freeze it first")
    flat = student.shape[-1]
    return _HeadKL.apply(student.reshape(-1, flat), teacher.reshape(-1, flat).detach(), head.weight, head.bias, chunk)


def logits_kl(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """Mean per-token KL(teacher ‖ student) from logits [..., V]: the plain way, for models whose logits are more
    than a linear head of the final hidden states (soft-capping, scaling)."""
    t, s = teacher.log_softmax(-1), student.log_softmax(-1)
    return (t.exp() * (t - s)).sum(-1).mean()
