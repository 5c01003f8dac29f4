"""DCEM: the differentiable cross-entropy method in PyTorch."""
