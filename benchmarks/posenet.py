"""Speed and memory of the Pose-net (paper 2.2) at the default and the paper width.

For each width, in a fresh Python process (so that its peak memory is its own), the
script builds the Pose-net for 512 x 256 x 1 images and prints its parameter count,
the inference time per image of ``lumbar_core.models.predict_heatmaps`` with batches
of 1 and of 8 (a shard), the time of one training step (batch 4, Eq. 2 + 3 loss, Adam)
and the peak resident memory (``resource.getrusage``). Times are medians after one
untimed call (which includes tracing). The device is whatever Keras uses: a GPU if
one is visible, else the CPU.

Usage: ``python benchmarks/posenet.py [--widths 8 32] [--repeats N] [--depth D]``
"""

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np

from _bench import devices, median_s

_ROOT = Path(__file__).resolve().parents[1]


def measure(width, depth, repeats):
    """Measure one width in this process; returns a dict of figures."""
    if str(_ROOT) not in sys.path:
        sys.path.insert(0, str(_ROOT))
    import keras

    from lumbar_core.models import build_posenet, posenet_loss, predict_heatmaps

    keras.utils.set_random_seed(0)
    model = build_posenet((512, 256, 1), width=width, depth=depth)
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
        "device": devices(),
        "params": model.count_params(),
        "infer_ms_batch1": 1e3 * batch1,
        "infer_ms_per_image_batch8": 1e3 * batch8 / 8,
        "train_step_s_batch4": step,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--widths", type=int, nargs="+", default=[8, 32], help="widths to measure (default: 8 32)"
    )
    parser.add_argument("--depth", type=int, default=5, help="poolings per stage (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (median reported)")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one is not None:
        print(json.dumps(measure(args.one, args.depth, args.repeats)))
        return

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    print("Pose-net, input 512 x 256 x 1")
    print(
        f"{'width':>5} {'device':>12} {'params':>11} {'ms/img b1':>10} {'ms/img b8':>10} "
        f"{'train s/step b4':>16} {'peak RSS MiB':>13}"
    )
    for width in args.widths:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            str(width),
            "--depth",
            str(args.depth),
            "--repeats",
            str(args.repeats),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(f"{width:>5} failed:\n{proc.stderr[-2000:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"{r['width']:>5} {r['device'][:12]:>12} {r['params']:>11,} {r['infer_ms_batch1']:>10.1f} "
            f"{r['infer_ms_per_image_batch8']:>10.1f} {r['train_step_s_batch4']:>16.2f} {r['peak_rss_mib']:>13.0f}"
        )


if __name__ == "__main__":
    main()
