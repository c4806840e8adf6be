"""Evaluation: perplexity (and, later, task accuracy and sweeps)."""

from ponder.eval.perplexity import PerplexityResult, perplexity

__all__ = ["PerplexityResult", "perplexity"]
