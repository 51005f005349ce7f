"""ifscale: influence functions at scale (Schioppa et al., AAAI 2022) in JAX.

The library is plain Python: functions take arrays, pytrees and frozen dataclasses.
Hydra lives only in `experiments/`.
"""

__version__ = "0.1.0"
