"""Evaluation: perplexity (and, later, task accuracy and sweeps)."""

from ponder.eval.perplexity import PerplexityResult, decoder_perplexity, perplexity

__all__ = ["PerplexityResult", "decoder_perplexity", "perplexity"]
