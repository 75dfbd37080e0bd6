"""Two fake CPU devices and deterministic XLA flags, before JAX starts a backend.

Tests compile many small programs and train them for seconds: XLA's
backend optimizations at level 0 halve the compile time, and every property
tested (equal results across grid layouts, recorded values, masks) holds at
any level.
"""

import os

from study import devices

os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
devices.configure(cpu_devices=2)
