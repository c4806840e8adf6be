"""Convert a model into an adaptive one, turn its budget knob, save and load it.

A converted directory holds `ponder_config.json` (the base model reference, method, options, budget) and
`ponder_state.safetensors` with only the tensors conversion created (thresholds, policies): the base weights are
loaded from the reference, as PEFT adapters do.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ponder import models
from ponder.data import CALIB_DEFAULT, load_text
from ponder.errors import PonderError
from ponder.io import save_tensors_atomic, write_json_atomic
from ponder.methods import get_method
from ponder.methods.allocate import allocate_greedy
from ponder.methods.base import SparseFFN, check_budget
from ponder.models.ffn import activation_name, ffn_view
from ponder.models.targets import architecture_of, decoder_layers
from ponder.state import CONFIG_FILE, AdaptiveState, adaptive_state, method_name, set_adaptive_state
from ponder.train.capture import ActivationStore, calibration_windows
from ponder.train.distributed import World, world

ALLOCATIONS = ("uniform", "greedy")
ALLOCATION_TOKENS = 1024  # calibration tokens whose loss guides the greedy allocation
STATE_FILE = "ponder_state.safetensors"
_SHARED = ("gate", "up", "down", "gate_bias", "up_bias", "down_bias")


def adaptive_modules(model: PreTrainedModel) -> list[SparseFFN]:
    arch = architecture_of(model)
    return [m for layer in decoder_layers(model) if isinstance(m := getattr(layer, arch.ffn), SparseFFN)]


def replace_ffns(model: PreTrainedModel, method_name: str, config) -> list[SparseFFN]:
    """Swap every FFN for the method's uncalibrated module (weights shared, nothing computed yet)."""
    method = get_method(method_name)
    arch = architecture_of(model)
    activation = activation_name(model)
    modules = []
    for index, layer in enumerate(decoder_layers(model)):
        with _seeded(index):
            module = method.layer_class(
                view=ffn_view(getattr(layer, arch.ffn), arch), activation=activation, config=config
            )
        setattr(layer, arch.ffn, module)
        module.attach(layer)
        modules.append(module)
    set_adaptive_state(model, AdaptiveState(method=method_name, config=dataclasses.asdict(config)))
    return modules


def convert(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    method: str,
    *,
    config=None,
    calibration: str = CALIB_DEFAULT,
    calibration_tokens: int = 8192,
    budget: float = 1.0,
    allocation: str = "uniform",
    work_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> PreTrainedModel:
    """Make `model` adaptive in place with `method`, calibrated on `calibration` text (never evaluation text).

    `allocation`: "uniform" gives every layer the global budget; "greedy" spends it where the calibration loss
    needs it most (`ponder.methods.allocate`, a few minutes more for SmolLM2-135M).
    `work_dir` keeps the captured activations (fp16 shards) and one checkpoint per calibrated layer; with
    `resume`, a conversion killed part-way continues there and ends with the same tensors as an uninterrupted run.
    Without `work_dir` a temporary directory is used and removed.
    """
    if allocation not in ALLOCATIONS:
        raise PonderError(f"allocation '{allocation}' is unknown: choose one of {', '.join(ALLOCATIONS)}")
    spec = get_method(method)
    if allocation == "greedy" and spec.layer_class.joint_thresholds:
        raise PonderError(f"{method} shares one threshold across layers already: drop --allocation greedy")
    if config is None:
        config = spec.config_class()
    text = load_text(calibration)
    job = {"method": method, "config": dataclasses.asdict(config), "calibration": calibration}
    job |= {"tokens": calibration_tokens, "allocation": allocation, "layers": len(decoder_layers(model))}
    ranks = world()
    if ranks.size > 1 and work_dir is None:
        raise PonderError("a conversion under torchrun needs a work directory that every rank shares (work_dir)")
    progress = progress and ranks.main
    with _work_directory(work_dir) as work:
        _start_job(work, job, resume, ranks)
        windows = calibration_windows(tokenizer, text, tokens=calibration_tokens)
        store = ActivationStore(work / "capture", spec.captures).fill(model, windows, progress=progress, ranks=ranks)
        ranks.barrier()  # every window captured
        modules = replace_ffns(model, method, config)
        checkpoints = [work / "layers" / f"layer-{index:03d}.safetensors" for index in range(len(modules))]
        calibrated_here = set()
        with torch.inference_mode(False), torch.no_grad():
            for index, module in enumerate(
                tqdm(modules, desc=f"calibrate {method}", unit="layer", disable=not progress)
            ):
                if not checkpoints[index].exists() and ranks.owns(index):
                    with _seeded(index):
                        module.calibrate(*_calibration_inputs(store, index))
                    save_tensors_atomic(_own_state(module), checkpoints[index])
                    calibrated_here.add(index)
            ranks.barrier()  # every layer calibrated by its rank
            for index, module in enumerate(modules):
                if index not in calibrated_here:  # finished before a resume, or by another rank
                    module.load_state_dict(load_file(str(checkpoints[index])), strict=False)
            spec.layer_class.calibrate_jointly(modules, model, windows, progress=progress)
            # every rank refines (same seeds, same results): not parallelized
            pool = partial(calibration_windows, tokenizer, text, tokens=len(text))  # all of it, if asked for
            spec.layer_class.refine_jointly(modules, model, windows, pool, work=work / "tune", progress=progress)
    if allocation == "greedy":
        batches = windows.reshape(-1)[:ALLOCATION_TOKENS]
        batches = batches[: len(batches) // 512 * 512].view(-1, 512)
        allocate_greedy(model, modules, batches, progress=progress, ranks=ranks)
    adaptive_state(model).calibration = {"data": calibration, "tokens": calibration_tokens, "allocation": allocation}
    set_budget(model, budget)
    return model


JOB_FILE = "job.json"


def _calibration_inputs(store: ActivationStore, index: int) -> tuple[torch.Tensor, ...]:
    """A layer's FFN inputs, or the residual stream at its input and output (`Method.captures`)."""
    if store.point == "residual":
        return store.layer(index), store.layer(index + 1)
    return (store.layer(index),)


@contextmanager
def _seeded(layer: int) -> Iterator[None]:
    """Torch's global RNG seeded by the layer index, then restored: a layer's new parts (router and predictor
    initial weights) are the same whatever ran before, in any process, on resume, and on any torchrun rank."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(layer)
        yield


@contextmanager
def _work_directory(work_dir: str | Path | None) -> Iterator[Path]:
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        yield Path(work_dir)
        return
    with tempfile.TemporaryDirectory(prefix="ponder-convert-") as tmp:
        yield Path(tmp)


def _start_job(work: Path, job: dict, resume: bool, ranks: World) -> None:
    """Record what this conversion is; refuse to mix the partial results of a different one. Every rank checks
    before the main rank writes, so no rank mistakes the record of this run for an interrupted one."""
    path = work / JOB_FILE
    if path.exists():
        if not resume:
            raise PonderError(f"{work} holds an interrupted conversion: pass --resume to continue it, or delete it")
        recorded = json.loads(path.read_text())
        if recorded != json.loads(json.dumps(job)):
            raise PonderError(f"{work} holds a conversion with other options: delete it or rerun with the same ones")
    ranks.barrier()
    if ranks.main and not path.exists():
        write_json_atomic(path, job)


def set_budget(model: PreTrainedModel, budget: float) -> None:
    """Set the target fraction of dense FFN compute on every adaptive module (no recalibration)."""
    modules = adaptive_modules(model)
    if not modules:
        if check_budget(budget) != 1.0:
            raise PonderError(f"budget {budget} needs an adaptive model: convert it first with `ponder convert`")
        return
    for module in modules:
        module.set_budget(budget)
    adaptive_state(model).budget = budget


def set_policy(model: PreTrainedModel, policy: str) -> None:
    """Switch the routing policy of a routed model (e.g. `moe`) at run time; budgets keep their calibration."""
    modules = adaptive_modules(model)
    if not modules:
        raise PonderError(f"a {method_name(model)} model has no routing policies: --policy applies to routed methods")
    for module in modules:
        module.set_policy(policy)  # the first raises for a method without policies, before anything changed
    adaptive_state(model).policy = policy


def get_budget(model: PreTrainedModel) -> float:
    modules = adaptive_modules(model)
    return modules[0].budget if modules else 1.0


@contextmanager
def full_budget(model: PreTrainedModel) -> Iterator[PreTrainedModel]:
    """The dense teacher from the same weights: budget 1 inside the block, restored after."""
    previous = get_budget(model)
    set_budget(model, 1.0)
    try:
        yield model
    finally:
        set_budget(model, previous)


def _own_state(module: SparseFFN) -> dict[str, torch.Tensor]:
    """The tensors conversion created in one module (not the shared base weights)."""
    state = module.state_dict()
    return {k: v for k, v in state.items() if k.split(".")[0] not in _SHARED and not k.startswith("act.")}


def _new_tensors(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    return {
        f"layers.{index}.{key}": tensor.contiguous()
        for index, module in enumerate(adaptive_modules(model))
        for key, tensor in _own_state(module).items()
    }


def save_adaptive(model: PreTrainedModel, directory: str | Path, *, base_model: str) -> None:
    """Write the base reference, method config and new tensors; the directory appears whole or not at all."""
    if not adaptive_modules(model):
        raise PonderError("model has no adaptive modules to save: convert it first")
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        base = str(Path(base_model).resolve()) if Path(base_model).exists() else base_model
        config = {**adaptive_state(model).to_json(), "base_model": base, "ponder_format": 1}
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        save_file(_new_tensors(model), str(tmp / STATE_FILE))
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def is_adaptive_dir(name: str) -> bool:
    return (Path(name) / CONFIG_FILE).is_file()


def load_adaptive(
    directory: str | Path, *, dtype: str | torch.dtype = "float32", threads: int | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a converted model: its base, the method's modules, their saved tensors, its budget."""
    directory = Path(directory)
    try:
        config = json.loads((directory / CONFIG_FILE).read_text())
        method, options, base = config["method"], config["config"], config["base_model"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise PonderError(f"{directory / CONFIG_FILE} is unreadable ({e}): reconvert with `ponder convert`") from None
    try:
        state = load_file(str(directory / STATE_FILE))
    except (OSError, SafetensorError) as e:
        raise PonderError(f"{directory / STATE_FILE} is missing or corrupt ({e}): reconvert the model") from None
    model, tokenizer = models.load(base, dtype=dtype, threads=threads)
    spec = get_method(method)
    modules = replace_ffns(model, method, spec.config_class(**(spec.config_class.SAVED_BEFORE | options)))
    for index, module in enumerate(modules):
        prefix = f"layers.{index}."
        own = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        missing = set(_own_state(module)) - set(own)
        if missing:
            raise PonderError(f"{directory / STATE_FILE} lacks {sorted(missing)[:3]} for layer {index}: reconvert")
        module.load_state_dict(own, strict=False)
    adaptive_state(model).calibration = config.get("calibration")
    set_budget(model, config.get("budget", 1.0))
    if "policy" in config:
        set_policy(model, config["policy"])
    return model, tokenizer


def load(
    name: str, *, dtype: str | torch.dtype = "float32", threads: int | None = None, trust_remote_code: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load any model ponder takes: a converted directory, or anything `ponder.models.load` takes."""
    if is_adaptive_dir(name):
        return load_adaptive(name, dtype=dtype, threads=threads)
    return models.load(name, dtype=dtype, threads=threads, trust_remote_code=trust_remote_code)
