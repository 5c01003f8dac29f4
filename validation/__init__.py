"""Scripts that reproduce the paper's results, and a short demo."""
