"""A Llama-style model's weights in the runtime's formats: read from a GGUF as they are, or quantized from HF.

Tensors keep HF's names (`model.layers.0.self_attn.q_proj.weight`). Projections (attention, FFN, lm_head) are in
the chosen format; norms and the token embedding stay as they are (fp32 from HF, the file's Q8_0 rows from a
GGUF). A GGUF without `output.weight` ties the head to the embedding, as llama.cpp does: the head is then the
file's Q8_0 embedding rows. Saved models are a directory: `quant.safetensors` (uint8 block rows and fp32
tensors), `ponder_quant.json` (each tensor's format and logical shape) and the HF `config.json`.
"""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from transformers import AutoConfig, PretrainedConfig

from ponder.errors import PonderError
from ponder.quant.formats import (
    FORMATS,
    QUANTIZED,
    Format,
    check_shape,
    dequantize,
    format_of_ggml,
    get_format,
    quantize,
)
from ponder.quant.nearest import COST, NEAREST, to_nearest

if TYPE_CHECKING:
    from transformers import PreTrainedModel

QUANT_FILE = "quant.safetensors"
MANIFEST = "ponder_quant.json"
MANIFEST_VERSION = 1
SUPPORTED_TYPES = ("llama", "mistral", "qwen2", "qwen3")
PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
PROJECTIONS += ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
HEAD, EMBED = "lm_head.weight", "model.embed_tokens.weight"
# GGUF tensor name -> HF name, within a block and at the top level (llama.cpp's gguf-py tensor map, llama arch).
_GGUF_BLOCK = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GGUF_TOP = {"token_embd.weight": EMBED, "output_norm.weight": "model.norm.weight", "output.weight": HEAD}


@dataclass(frozen=True)
class QuantTensor:
    """One tensor in a runtime format. `shape` is the logical shape ([N, K] weights, [N] norms and biases)."""

    format: Format
    shape: tuple[int, ...]
    data: torch.Tensor
    """uint8 [N, K/32·block_bytes] for block formats; float32 of `shape` for f32."""

    def __post_init__(self) -> None:
        fmt, shape = self.format, self.shape
        if fmt.blocked:
            expected, dtype = (shape[0], fmt.row_bytes(shape[1])), torch.uint8
        else:
            expected, dtype = shape, torch.float32
        if tuple(self.data.shape) != tuple(expected) or self.data.dtype != dtype:
            raise PonderError(
                f"a {fmt.name} tensor of shape {list(shape)} needs {dtype} data {list(expected)}, got "
                f"{self.data.dtype} {list(self.data.shape)}: the file is corrupt, re-create it"
            )

    def dequantize(self) -> torch.Tensor:
        """The fp32 values this tensor stands for, of its logical shape."""
        return dequantize(self.data, self.format, self.shape[-1]).reshape(self.shape)

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()


@dataclass
class QuantModel:
    """A decoder-only Llama-style model's tensors by HF name, with its HF config."""

    config: PretrainedConfig
    weights: str
    """The format its projections were asked in (a GGUF's tensors of other runtime formats stay as they are)."""
    tensors: dict[str, QuantTensor] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """What loading changed that a user should hear about (a GGUF's K-quants run in the nearest format)."""

    def __post_init__(self) -> None:
        model_type = getattr(self.config, "model_type", None)
        if model_type not in SUPPORTED_TYPES:
            raise PonderError(
                f"model type '{model_type}' has no quantized runtime: use one of {', '.join(SUPPORTED_TYPES)}"
            )
        missing = [name for name in self.required() if name not in self.tensors]
        if missing:
            raise PonderError(f"the model lacks {', '.join(missing[:3])}: the file is incomplete, re-create it")

    def required(self) -> list[str]:
        names = [EMBED, "model.norm.weight"]
        for i in range(self.config.num_hidden_layers):
            prefix = f"model.layers.{i}."
            names += [prefix + "input_layernorm.weight", prefix + "post_attention_layernorm.weight"]
            names += [f"{prefix}{p}.weight" for p in PROJECTIONS]
        return names

    @property
    def head(self) -> QuantTensor:
        """The lm_head: its own tensor, or the embedding where the two are tied."""
        return self.tensors.get(HEAD, self.tensors[EMBED])

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())


def _is_projection(name: str) -> bool:
    return name == HEAD or (name.endswith(".weight") and any(f".{p}." in name for p in PROJECTIONS))


def _check_config(config: PretrainedConfig) -> None:
    rope_type = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    sliding = getattr(config, "sliding_window", None) if getattr(config, "use_sliding_window", True) else None
    if getattr(config, "hidden_act", "silu") != "silu":
        raise PonderError(f"activation '{config.hidden_act}' is not in the quantized runtime: it runs SwiGLU (silu)")
    if rope_type in ("dynamic", "longrope") or sliding is not None:
        raise PonderError("the quantized runtime runs full attention with static RoPE tables: this model needs more")


def quantize_model(model: PreTrainedModel, weights: str) -> QuantModel:
    """An HF model's projections and head in format `weights`; norms, biases and the embedding stay fp32."""
    fmt = get_format(weights)
    if model.config.model_type not in SUPPORTED_TYPES:
        raise PonderError(
            f"model type '{model.config.model_type}' has no quantized runtime: use one of {', '.join(SUPPORTED_TYPES)}"
        )
    _check_config(model.config)
    tensors = {}
    for name, tensor in model.state_dict().items():
        if _is_projection(name):
            tensors[name] = QuantTensor(fmt, tuple(tensor.shape), quantize(tensor, fmt, name))
        else:
            values = tensor.detach().to(torch.float32).contiguous().clone()
            tensors[name] = QuantTensor(FORMATS["f32"], tuple(values.shape), values)
    return QuantModel(model.config, fmt.name, tensors)


def _unpermute(rows: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K row permutation (its converter interleaves each head's two halves for GGML's
    adjacent-pair RoPE; HF rotates halves): rows [N, ·] of whole blocks, so moving them loses nothing."""
    n = rows.shape[0]
    return rows.reshape(heads, n // heads // 2, 2, -1).transpose(1, 2).reshape(rows.shape).contiguous()


_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFTensorInfo:
    name: str
    ggml: GGMLQuantizationType
    shape: tuple[int, ...]
    """HF order (outermost first): [N, K] for a weight GGUF lists as (K, N)."""
    offset: int
    """Byte offset of the tensor's data in the file."""
    nbytes: int


class GGUFHeader:
    """A GGUF file's key-value fields and tensor table, read without touching the tensor data.

    gguf.GGUFReader materialises every field (the 49k-token vocabulary as numpy arrays: about 160 MB of memory
    for SmolLM2) and maps the whole file; the runtime needs the scalar fields and where each tensor lies, then
    reads each tensor's bytes once into its own buffer. Arrays of strings are skipped, others kept as lists.
    """

    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as f:
            self._f = f
            if f.read(4) != b"GGUF":
                raise PonderError(f"{path} is not a GGUF file (bad magic): give a .gguf model file")
            version, tensors, fields = self._read("<IQQ")
            if version not in (2, 3):
                raise PonderError(f"{path} is GGUF version {version}: ponder reads versions 2 and 3")
            self.fields = {}
            for _ in range(fields):
                key = self._string()
                (kind,) = self._read("<I")
                self.fields[key] = self._value(kind)
            table = []
            for _ in range(tensors):
                name = self._string()
                (dims,) = self._read("<I")
                shape = self._read(f"<{dims}Q")
                kind, offset = self._read("<IQ")
                table.append((name, GGMLQuantizationType(kind), tuple(reversed(shape)), offset))
            alignment = int(self.fields.get("general.alignment", 32))
            start = -(-f.tell() // alignment) * alignment
        size = path.stat().st_size
        self.tensors = {}
        for name, ggml, shape, offset in table:
            block, block_bytes = GGML_QUANT_SIZES[ggml]
            info = GGUFTensorInfo(name, ggml, shape, start + offset, int(np.prod(shape)) // block * block_bytes)
            if info.offset + info.nbytes > size:
                raise PonderError(f"{path} is truncated ({name} ends past its {size} bytes): download it again")
            self.tensors[name] = info

    def _read(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        data = self._f.read(size)
        if len(data) != size:
            raise PonderError(f"{self.path} is truncated in its header: download it again")
        return struct.unpack(fmt, data)

    def _string(self) -> str:
        (length,) = self._read("<Q")
        return self._f.read(length).decode("utf-8", errors="replace")

    def _value(self, kind: int):
        if kind in _SCALARS:
            return self._read("<" + _SCALARS[kind])[0]
        if kind == _STRING:
            return self._string()
        if kind == _ARRAY:
            item, count = self._read("<IQ")
            if item == _STRING:
                for _ in range(count):
                    (length,) = self._read("<Q")
                    self._f.seek(length, 1)
                return count
            if item in _SCALARS:
                return list(self._read(f"<{count}{_SCALARS[item]}"))
            return [self._value(item) for _ in range(count)]
        raise PonderError(f"{self.path} has a field of unknown type {kind}: the file is corrupt")

    def read(self, info: GGUFTensorInfo) -> np.ndarray:
        """The tensor's bytes as they are in the file (uint8 [nbytes]), read into a fresh buffer."""
        data = np.empty(info.nbytes, dtype=np.uint8)
        with open(self.path, "rb") as f:
            f.seek(info.offset)
            if f.readinto(memoryview(data)) != info.nbytes:
                raise PonderError(f"{self.path} is truncated ({info.name}): download it again")
        return data

    def config(self) -> PretrainedConfig:
        """The HF config of a llama-architecture file, mapped by transformers' own GGUF field table."""
        from transformers import LlamaConfig
        from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

        architecture = self.fields.get("general.architecture")
        if architecture != "llama":
            raise PonderError(f"{self.path} is a '{architecture}' GGUF: the quantized runtime reads llama GGUFs")
        scaling = self.fields.get("llama.rope.scaling.type", "none")
        if scaling not in ("none", None):
            raise PonderError(f"{self.path} uses RoPE scaling '{scaling}': the quantized runtime has static RoPE")
        kwargs = {
            hf: self.fields[f"llama.{key}"]
            for key, hf in GGUF_CONFIG_MAPPING["llama"].items()
            if hf is not None and f"llama.{key}" in self.fields
        }
        kwargs.setdefault("vocab_size", self.tensors["token_embd.weight"].shape[0])
        for key in ("bos", "eos", "padding"):
            if f"tokenizer.ggml.{key}_token_id" in self.fields:
                kwargs[f"{'pad' if key == 'padding' else key}_token_id"] = self.fields[
                    f"tokenizer.ggml.{key}_token_id"
                ]
        theta = kwargs.pop("rope_theta", 10000.0)
        return LlamaConfig(
            **kwargs,
            rope_parameters={"rope_type": "default", "rope_theta": float(theta)},
            tie_word_embeddings="output.weight" not in self.tensors,
        )


def _gguf_tensor(header: GGUFHeader, info: GGUFTensorInfo, fmt: Format | None, nearest: bool) -> QuantTensor:
    """One GGUF tensor in a runtime format: its bytes as they are where the runtime reads its type and no other
    format is asked for; a block type without kernels in its nearest runtime format where `nearest` (projections
    in their own format); else dequantized (to fp32) and, where `fmt` is a block format, quantized to it."""
    shape, native = info.shape, format_of_ggml(info.ggml)
    raw = header.read(info)
    if native is not None and (fmt is None or fmt == native):
        data = torch.from_numpy(raw)
        if native.blocked:
            data = data.reshape(shape[0], native.row_bytes(shape[1]))
        else:
            data = data.view(torch.float32).reshape(shape)
        return QuantTensor(native, shape, data)
    if nearest and fmt is None and info.ggml in NEAREST:
        return QuantTensor(NEAREST[info.ggml], shape, to_nearest(raw, info.ggml, shape, info.name))
    values = torch.from_numpy(np.ascontiguousarray(gguf_dequantize(raw, info.ggml), np.float32)).reshape(shape)
    if fmt is None or not fmt.blocked:
        return QuantTensor(FORMATS["f32"], shape, values.contiguous())
    return QuantTensor(fmt, shape, quantize(values, fmt, info.name))


def read_gguf(path: str | Path, weights: str | None = None) -> QuantModel:
    """A llama-architecture GGUF's tensors. Projections in a runtime format (Q8_0, Q4_0, Q4_1) load as the file's
    blocks, bit for bit, unless `weights` asks for another format; the embedding, the tied head and norms stay
    as in the file. Without `weights`, projections and the embedding of block types the runtime has no kernels for
    (the K-quants of a Q4_K_M file) run in their nearest format (`ponder.quant.nearest`), said in `notes`; tensors
    of other GGUF types are dequantized (and quantized to `weights` if given)."""
    path = Path(path)
    fmt = None if weights is None else get_format(weights)
    try:
        header = GGUFHeader(path)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise PonderError(f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    config = header.config()
    _check_config(config)
    heads = {
        "self_attn.q_proj.weight": config.num_attention_heads,
        "self_attn.k_proj.weight": config.num_key_value_heads,
    }
    tensors, converted = {}, {}
    for info in header.tensors.values():
        block, _, rest = info.name.partition(".")
        if info.name in _GGUF_TOP:
            name = _GGUF_TOP[info.name]
        elif block == "blk" and rest.partition(".")[2] in _GGUF_BLOCK:
            index, _, local = rest.partition(".")
            name = f"model.layers.{index}.{_GGUF_BLOCK[local]}"
        else:
            continue  # e.g. rope_freqs: the config's RoPE parameters stand for it
        projection = _is_projection(name)
        keep = fmt if projection else None  # embedding, tied head and norms as they are
        nearest = projection or name == EMBED  # the embedding may be the tied head: a K-quant one runs converted
        tensor = _gguf_tensor(header, info, keep, nearest=nearest)
        if nearest and fmt is None and info.ggml in NEAREST:
            converted[info.ggml.name] = f"{info.ggml.name} -> {NEAREST[info.ggml].name}, {COST[info.ggml]}"
        local = name.partition(".layers.")[2].partition(".")[2]
        if local in heads:
            tensor = QuantTensor(tensor.format, tensor.shape, _unpermute(tensor.data, heads[local]))
        tensors[name] = tensor
    label = fmt.name if fmt is not None else tensors["model.layers.0.mlp.up_proj.weight"].format.name
    notes = [f"{path.name}: projections without kernels run converted ({'; '.join(converted.values())})"]
    return QuantModel(config, label, tensors, notes=notes if converted else [])


def save_quantized(model: QuantModel, directory: str | Path, tokenizer=None) -> Path:
    """Write `model` (and its tokenizer, if given) as a directory, atomically: a temp dir renamed into place."""
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        save_file({name: t.data.contiguous() for name, t in model.tensors.items()}, str(tmp / QUANT_FILE))
        manifest = {
            "version": MANIFEST_VERSION,
            "weights": model.weights,
            "tensors": {name: {"format": t.format.name, "shape": list(t.shape)} for name, t in model.tensors.items()},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        model.config.to_json_file(str(tmp / "config.json"))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def is_quantized_dir(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def load_quantized(directory: str | Path) -> QuantModel:
    """A model written by `save_quantized`, bit for bit; a one-line error for a missing, corrupt or short file."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        entries = manifest["tensors"]
        config = AutoConfig.from_pretrained(str(directory))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PonderError(f"cannot read the quantized model in {directory} ({e}): re-create it") from None
    if manifest.get("version") != MANIFEST_VERSION:
        raise PonderError(f"{directory} is a version {manifest.get('version')} quantized model: re-create it")
    tensors = {}
    try:
        with safe_open(str(directory / QUANT_FILE), framework="pt") as f:
            for name, entry in entries.items():
                tensors[name] = QuantTensor(get_format(entry["format"]), tuple(entry["shape"]), f.get_tensor(name))
    except (OSError, SafetensorError, KeyError, TypeError) as e:
        raise PonderError(f"cannot read {directory / QUANT_FILE} ({str(e).splitlines()[0]}): re-create it") from None
    return QuantModel(config, manifest.get("weights", "f32"), tensors)


__all__ = [
    "QUANTIZED",
    "QuantModel",
    "QuantTensor",
    "check_shape",
    "is_quantized_dir",
    "load_quantized",
    "quantize_model",
    "read_gguf",
    "save_quantized",
]
