"""Would 2 MB pages help the one-token kernels? The dense FFN kernel and teal's kernel on their usual weights
(4 KB pages; this machine's THP setting is `madvise`, so nothing gets huge pages unasked) against copies in an
anonymous private mapping advised MADV_HUGEPAGE, same process, interleaved rounds, real SmolLM2 inputs.

    python benchmarks/experiments/hugepages_ab.py DIR [--budgets 0.5,0.25] [--repeats 15] [--tokens 64]
"""

from __future__ import annotations

import ctypes
import mmap

import torch
from kernel_ab import arguments, layer_kernels, report, rounds, setup  # benchmarks/ is on sys.path as a script

from ponder.adaptive import set_budget
from ponder.kernels import native

HUGE = 2 << 20
_mappings: list[mmap.mmap] = []  # the copies' memory: kept alive for the process


def on_huge_pages(t: torch.Tensor) -> torch.Tensor:
    """A copy of fp32 `t` in a 2 MB-aligned stretch of a private anonymous mapping advised for huge pages."""
    size = t.numel() * t.element_size()
    mapping = mmap.mmap(-1, size + HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    mapping.madvise(mmap.MADV_HUGEPAGE)
    offset = -ctypes.addressof(ctypes.c_char.from_buffer(mapping)) % HUGE
    copy = torch.frombuffer(mapping, dtype=t.dtype, count=t.numel(), offset=offset).view(t.shape)
    _mappings.append(mapping)
    return copy.copy_(t)


def huge_page_kb() -> str:
    with open("/proc/self/smaps_rollup") as rollup:
        return next((line.split()[1] for line in rollup if line.startswith("AnonHugePages")), "?")


def main() -> None:
    args = arguments("teal")
    model, modules, tokens, dense = setup(args.dir, args.tokens)
    huge_dense = [
        native.DenseKernel(*(on_huge_pages(w) for w in (m.gate, m.up, m.down)), None, None, m.activation)
        for m in modules
    ]
    glu = modules[0].gate is not None
    teal = [native.TealKernel(m.in_major, m.down_t, m.activation, glu) for m in modules]
    huge_teal = [
        native.TealKernel(on_huge_pages(m.in_major), on_huge_pages(m.down_t), m.activation, glu) for m in modules
    ]
    print(f"AnonHugePages after the copies: {huge_page_kb()} kB")

    steps = {"dense kernel, 4 KB pages": layer_kernels(dense), "dense kernel, 2 MB pages": layer_kernels(huge_dense)}
    for budget in (float(b) for b in args.budgets.split(",")):
        set_budget(model, budget)
        thresholds = [tuple(m.threshold_values) for m in modules]
        steps[f"teal {budget}, 4 KB pages"] = layer_kernels(teal, thresholds)
        steps[f"teal {budget}, 2 MB pages"] = layer_kernels(huge_teal, thresholds)
    rows = rounds(steps, tokens, args.repeats)
    report(rows, f"threads={torch.get_num_threads()} repeats={args.repeats} tokens={args.tokens}")


if __name__ == "__main__":
    main()
