"""Timing helpers shared by the benchmark scripts of this folder."""

import time

import numpy as np


def median_s(run, repeats):
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def devices():
    """The device Keras computes on, e.g. ``"CPU"`` or ``"jax: NVIDIA H200"``."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return ", ".join(d.name for d in gpus) or "CPU"
    if backend == "jax":
        import jax

        return f"jax: {jax.devices()[0].device_kind}"
    if backend == "torch":
        import torch

        return f"torch: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "torch: CPU"
    return backend


def gpu_peak_mib():
    """Peak GPU memory of this process as the backend reports it (MiB), None on a CPU."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            return None
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "gpu":
            return None
        return (device.memory_stats() or {}).get("peak_bytes_in_use", 0) / 2**20
    if backend == "torch":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return None
