"""Speed and memory of the M-net and the U-net (paper 2.3, Table 2).

For each network (M-net, U-net), width (the default CPU filters (8, 16, 32, 64, 128)
and the paper's (32, 64, 128, 256, 512)) and input (a 224 x 224 vertebra patch with
2 classes; with ``--whole`` also the 512 x 256 whole image with 6 classes, at full size
and pooled by 2 as ``whole_image.downsample`` of the default configuration does), in a
fresh Python process, the script prints the parameter count, the inference time per image of
``lumbar_core.models.predict_segmentation`` with batches of 1 and of 8 (a shard; the
five patches of an image make one batch of 5 in the workflow), the time of one
training step (batch 4, Eq. 8 loss, Adam) and the peak resident memory
(``resource.getrusage``) and, on a GPU, the peak device memory the backend reports.
Times are medians after one untimed call. The device is whatever Keras uses: a GPU if
one is visible, else the CPU (``KERAS_BACKEND`` picks the backend).

Usage: ``python benchmarks/segment.py [--archs mnet unet] [--widths cpu paper] [--whole]
[--inputs patch whole whole/2] [--patch-size 224] [--repeats N]``
"""

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np

from _bench import devices, gpu_peak_mib, median_s

_ROOT = Path(__file__).resolve().parents[1]
FILTERS = {"cpu": (8, 16, 32, 64, 128), "paper": (32, 64, 128, 256, 512)}
#: kind -> (input shape, classes, downsample of build_whole_image or None for a patch net)
INPUTS = {"patch": ((224, 224, 1), 2, None), "whole": ((512, 256, 1), 6, 1),
          "whole/2": ((512, 256, 1), 6, 2)}


def input_spec(kind, patch_size):
    """``INPUTS[kind]`` with the patch side set to ``patch_size`` for ``kind == "patch"``."""
    shape, classes, downsample = INPUTS[kind]
    if kind == "patch":
        shape = (patch_size, patch_size, 1)
    return shape, classes, downsample


def measure(arch, width, kind, repeats, patch_size=224):
    """Measure one configuration in this process; returns a dict of figures."""
    if str(_ROOT) not in sys.path:
        sys.path.insert(0, str(_ROOT))
    import keras

    from lumbar_core.models import build_whole_image, predict_segmentation, segmentation_network

    keras.utils.set_random_seed(0)
    input_shape, num_classes, downsample = input_spec(kind, patch_size)
    build, loss = segmentation_network(arch)
    if downsample is None:
        model = build(input_shape, num_classes=num_classes, filters=FILTERS[width])
    else:
        model = build_whole_image(arch, input_shape, num_classes=num_classes, filters=FILTERS[width],
                                  downsample=downsample)
    rng = np.random.default_rng(0)
    images = rng.random((8, *input_shape[:2])).astype(np.float32)
    batch1 = median_s(lambda: predict_segmentation(model, images[:1], batch_size=1), repeats)
    batch8 = median_s(lambda: predict_segmentation(model, images, batch_size=8), repeats)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss())
    x = images[:4, ..., None]
    onehot = np.eye(num_classes, dtype=np.float32)[rng.integers(0, num_classes, (4, *input_shape[:2]))]
    step = median_s(lambda: model.train_on_batch(x, {k: onehot for k in model.output_names}), repeats)
    return {
        "arch": arch,
        "width": width,
        "input": "x".join(map(str, input_shape[:2])) + (f"/{downsample}" if downsample else ""),
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
    parser.add_argument("--archs", nargs="+", default=["mnet", "unet"], choices=["mnet", "unet"])
    parser.add_argument("--widths", nargs="+", default=["cpu", "paper"], choices=sorted(FILTERS))
    parser.add_argument("--whole", action="store_true", help="also the 512 x 256 whole-image models")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (median reported)")
    parser.add_argument("--inputs", nargs="+", default=None, choices=sorted(INPUTS),
                        help="inputs to measure (default: patch, and whole whole/2 with --whole)")
    parser.add_argument("--patch-size", type=int, default=224,
                        help="side of the vertebra patch (default 224, the paper's; config.yaml: 128)")
    parser.add_argument("--one", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one is not None:
        print(json.dumps(measure(*args.one, args.repeats, args.patch_size)))
        return

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    kinds = args.inputs or (["patch", "whole", "whole/2"] if args.whole else ["patch"])
    print(
        f"{'arch':>5} {'width':>6} {'input':>10} {'device':>22} {'params':>11} {'ms/img b1':>10} "
        f"{'ms/img b8':>10} {'train s/step b4':>16} {'peak RSS MiB':>13} {'peak GPU MiB':>13}"
    )
    for kind in kinds:
        for arch in args.archs:
            for width in args.widths:
                cmd = [sys.executable, __file__, "--one", arch, width, kind, "--repeats", str(args.repeats),
                       "--patch-size", str(args.patch_size)]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    print(f"{arch} {width} {kind} failed:\n{proc.stderr[-2000:]}")
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                gpu = "n/a" if r["peak_gpu_mib"] is None else f"{r['peak_gpu_mib']:.0f}"
                print(
                    f"{r['arch']:>5} {r['width']:>6} {r['input']:>10} {r['device'][:22]:>22} {r['params']:>11,} "
                    f"{r['infer_ms_batch1']:>10.1f} {r['infer_ms_per_image_batch8']:>10.1f} "
                    f"{r['train_step_s_batch4']:>16.3f} {r['peak_rss_mib']:>13.0f} {gpu:>13}"
                )


if __name__ == "__main__":
    main()
