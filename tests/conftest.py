"""Two fake CPU devices and deterministic XLA flags, before JAX starts a backend."""

from study import devices

devices.configure(cpu_devices=2)
