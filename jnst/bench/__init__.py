"""Benchmarks of jnst against a PyTorch reference of the same algorithm.

* ``torch_ref``: the Gatys computation in PyTorch (optional: ``pip install 'jnst[bench]'``;
  torch is imported lazily, only when a torch function is called).
* ``flops``: analytic FLOP count of one loss + input-gradient evaluation.
* ``timing``: medians with device sync, peak memory, matmul peak.
* ``suite``: the measurements ``scripts/benchmark.py`` runs, as benchmark records.
* ``seed_scaling``: N seeds vmapped (``batched.run_seeds``) vs run one by one (issue 4).
* ``recorder``: benchmark records and the shared optimiser settings.
* ``step_memory``: bytes of one compiled step per size, from XLA's accounting (issue 10).
* ``time_to_quality``: single scale vs pyramid vs PyTorch to the same loss (issue 10).
* ``peaks``: the machine's matmul and 3×3 conv GFLOP/s per dtype, JAX and PyTorch.
"""


def torch_available() -> bool:
  """True if PyTorch can be imported (the parity test and torch columns need it)."""
  try:
    import torch  # noqa: F401
  except ImportError:
    return False
  return True
