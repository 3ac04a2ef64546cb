"""Benchmarks that ship with the package (``strongticket bench kernels|topk``): measured side by side with the
baseline in one run, reported as ratios. The research scripts (digits findings, theory sweeps) stay in
``benchmarks/``."""
