"""Where one layer of moe's per-layer calibration spends its time: captures the default model's FFN inputs on the
calibration text, calibrates one layer (default options) under torch.profiler, prints the wall time and the top ops.

    python benchmarks/experiments/moe_calibration_profile.py [--layer 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch.profiler import ProfilerActivity, profile

from ponder import models
from ponder.adaptive import replace_ffns
from ponder.data import CALIB_DEFAULT, load_text
from ponder.methods import make_config
from ponder.train.capture import ActivationStore, calibration_windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", type=int, default=5)
    args = parser.parse_args()
    model, tokenizer = models.load(models.DEFAULT_MODEL)
    windows = calibration_windows(tokenizer, load_text(CALIB_DEFAULT), tokens=8192)
    with tempfile.TemporaryDirectory() as work:
        inputs = ActivationStore(work, "ffn").fill(model, windows, progress=False).layer(args.layer)
    module = replace_ffns(model, "moe", make_config("moe", {}))[args.layer]
    torch.manual_seed(args.layer)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as profiled:
        start = time.perf_counter()
        module.calibrate(inputs)
        print(f"layer {args.layer} calibrated in {time.perf_counter() - start:.1f} s")
    print(profiled.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
