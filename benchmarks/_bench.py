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
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return ", ".join(d.name for d in gpus) or "CPU"
    return keras.backend.backend()
