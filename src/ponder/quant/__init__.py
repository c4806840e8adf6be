"""The quantized lean runtime: GGUF's Q8_0 / Q4_0 / Q4_1 blocks run natively, one C call per token."""

from ponder.quant.formats import FORMATS, QUANTIZED, Format, get_format
from ponder.quant.runtime import QuantDecoder, load_model
from ponder.quant.weights import QuantModel, QuantTensor, load_quantized, quantize_model, read_gguf, save_quantized

__all__ = [
    "FORMATS",
    "QUANTIZED",
    "Format",
    "QuantDecoder",
    "QuantModel",
    "QuantTensor",
    "get_format",
    "load_model",
    "load_quantized",
    "quantize_model",
    "read_gguf",
    "save_quantized",
]
