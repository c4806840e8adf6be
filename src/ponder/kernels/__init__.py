"""Executors' compiled helpers; the eager PyTorch paths in each method are the specification."""
