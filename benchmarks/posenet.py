"""Speed and memory of the Pose-net (paper 2.2) in the default and the paper configuration.

For each configuration (``--configs``: ``default`` reads the ``posenet`` block of
``config.yaml``, ``paper`` that of ``config/paper.yaml``: width, depth and downsample),
in a fresh Python process (so that its peak memory is its own), the script builds the
Pose-net for 512 x 256 x 1 images and prints its parameter count, the inference time per
image of ``lumbar_core.models.predict_heatmaps`` with batches of 1 and of 8 (a shard),
the time of one training step (batch 4, Eq. 2 + 3 loss, Adam), the peak resident memory
(``resource.getrusage``) and, on a GPU, the peak device memory the backend reports.
Times are medians after one untimed call (which includes tracing). The device is
whatever Keras uses: a GPU if one is visible, else the CPU; set ``KERAS_BACKEND`` to
``jax`` or ``torch`` to measure another backend.

Usage: ``python benchmarks/posenet.py [--configs default paper] [--repeats N]``
"""

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from _bench import devices, gpu_peak_mib, median_s

_ROOT = Path(__file__).resolve().parents[1]


_CONFIGS = {"default": _ROOT / "config.yaml", "paper": _ROOT / "config" / "paper.yaml"}


def posenet_settings(name):
    """``(width, depth, downsample)`` of the ``posenet`` block of a named configuration."""
    block = yaml.safe_load(_CONFIGS[name].read_text())["posenet"]
    return block["width"], block["depth"], block["downsample"]


def measure(width, depth, downsample, repeats):
    """Measure one configuration in this process; returns a dict of figures."""
    if str(_ROOT) not in sys.path:
        sys.path.insert(0, str(_ROOT))
    import keras

    from lumbar_core.models import build_posenet, posenet_loss, predict_heatmaps

    keras.utils.set_random_seed(0)
    model = build_posenet((512, 256, 1), width=width, depth=depth, downsample=downsample)
    images = np.random.default_rng(0).random((8, 512, 256)).astype(np.float32)
    batch1 = median_s(lambda: predict_heatmaps(model, images[:1], batch_size=1), repeats)
    batch8 = median_s(lambda: predict_heatmaps(model, images, batch_size=8), repeats)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=posenet_loss())
    x = images[:4, ..., None]
    y = {"y_l5": np.zeros_like(x), "y_l15": np.zeros_like(x)}
    step = median_s(lambda: model.train_on_batch(x, y), repeats)
    return {
        "width": width,
        "depth": depth,
        "downsample": downsample,
        "device": devices(),
        "params": model.count_params(),
        "infer_ms_batch1": 1e3 * batch1,
        "infer_ms_per_image_batch8": 1e3 * batch8 / 8,
        "train_step_s_batch4": step,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mib": gpu_peak_mib(),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["default", "paper"], choices=sorted(_CONFIGS),
                        help="configurations to measure (default: default paper)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (median reported)")
    parser.add_argument("--one", type=int, nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one is not None:
        print(json.dumps(measure(*args.one, args.repeats)))
        return

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    print("Pose-net, input 512 x 256 x 1")
    print(
        f"{'config':>7} {'w/d/ds':>7} {'device':>22} {'params':>11} {'ms/img b1':>10} {'ms/img b8':>10} "
        f"{'train s/step b4':>16} {'peak RSS MiB':>13} {'peak GPU MiB':>13}"
    )
    for name in args.configs:
        settings = posenet_settings(name)
        cmd = [sys.executable, __file__, "--one", *map(str, settings), "--repeats", str(args.repeats)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(f"{name:>7} failed:\n{proc.stderr[-2000:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        gpu = "n/a" if r["peak_gpu_mib"] is None else f"{r['peak_gpu_mib']:.0f}"
        print(
            f"{name:>7} {'/'.join(map(str, settings)):>7} {r['device'][:22]:>22} {r['params']:>11,} "
            f"{r['infer_ms_batch1']:>10.1f} {r['infer_ms_per_image_batch8']:>10.1f} "
            f"{r['train_step_s_batch4']:>16.3f} {r['peak_rss_mib']:>13.0f} {gpu:>13}"
        )


if __name__ == "__main__":
    main()
