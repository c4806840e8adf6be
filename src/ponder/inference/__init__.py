"""Fast inference paths and same-process benchmarks."""

from ponder.inference.decode import LeanDecoder

__all__ = ["LeanDecoder"]
