"""Training augmentation: its cost per image and what it does to the Pose-net's validation.

``time`` prints the time of one call of :func:`lumbar_core.training.augment_pair` on an
image of the Pose-net's input size (``I``, 512 x 256) and on square patches
(``--patch-sizes``), with the paper's augmentation (``paper``,
:data:`lumbar_core.training.PAPER_AUGMENTATION`) and with every part on
(``wide``, ``config/augment_wide.yaml``), median of ``--repeats`` calls.

``train`` trains the Pose-net (the ``posenet`` block of ``config.yaml``: width, depth,
downsample, batch size, warm-up) on the train split of a finished workflow's results for
``--epochs`` epochs (no early stopping, the weights of the lowest validation loss kept)
once per augmentation setting (``paper``, ``wide``, or ``config``: ``training.augment``
of ``config.yaml``), and prints for each its best validation loss and, on the
validation split, the centre error of the five centres that the peak selection finds
(mean distance to the annotated centres in ``I`` pixels over the images where it finds
five) and how many images it finds five centres on; ``--other-workdir`` scores the same
models on the validation split of a second cohort too (e.g. one rendered in another
style), which shows how well each setting carries over to images of another look. Only
train and val splits are read; a test split never is.

Usage::

    python benchmarks/augmentation.py time [--repeats N] [--patch-sizes 128 224]
    python benchmarks/augmentation.py train --workdir DIR [--epochs 15] [--settings paper wide]
        [--other-workdir DIR2]

where ``DIR`` holds the sample sheet named by ``--samples`` (relative to ``DIR``; default
``resources/demo/samples.tsv``), ``results/resize/<id>.npz`` (``I``) and
``results/ground_truth/<id>.json``.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from _bench import median_s

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))


def settings(name):
    """Keyword arguments of ``augment_pair`` for a named setting."""
    from lumbar_core.training import PAPER_AUGMENTATION

    if name == "paper":
        return dict(PAPER_AUGMENTATION)
    files = {"config": _ROOT / "config.yaml", "wide": _ROOT / "config" / "augment_wide.yaml"}
    if name in files:
        block = yaml.safe_load(files[name].read_text())["training"]["augment"]
        return {k: tuple(v) if isinstance(v, list) else v for k, v in block.items()}
    raise ValueError(f"unknown setting {name!r}: paper, config or wide")


def run_time(args):
    from lumbar_core.training import augment_pair

    rng = np.random.default_rng(0)
    shapes = [(512, 256)] + [(p, p) for p in args.patch_sizes]
    print("shape      setting  ms per image")
    for shape in shapes:
        # A smooth image, as I and patches are after pre-processing.
        image = rng.random(shape).astype(np.float32)
        labels = (image > 0.5).astype(np.uint8) if shape[0] == shape[1] else None
        points = np.array([[shape[1] / 2, shape[0] / 4], [shape[1] / 2, 3 * shape[0] / 4]])
        for name in ("paper", "wide"):
            kwargs = settings(name)
            seeds = iter(range(10**6))

            def one():
                augment_pair(image, rng=np.random.default_rng(next(seeds)), points=points,
                             labels=labels, **kwargs)

            print(f"{shape[0]:>4} x {shape[1]:<4} {name:<8} {1e3 * median_s(one, args.repeats):8.2f}")


def _load(workdir, samples, split):
    import pandas as pd

    from lumbar_core import io
    from lumbar_core.localize import l5_sigma2

    sheet = pd.read_csv(workdir / samples, sep="\t", dtype=str)
    images, centres, sigma2, ids = [], [], [], []
    for image_id in sheet.loc[sheet["split"] == split, "image_id"]:
        data = io.load_npz(workdir / "results" / "resize" / f"{image_id}.npz")
        points = io.read_json(workdir / "results" / "ground_truth" / f"{image_id}.json")
        if points.get("status") != "ok" or "i" not in data:
            continue
        images.append(data["i"].astype(np.float32))
        centres.append(points["centres_i"])
        sigma2.append(l5_sigma2(points["l5_height_i"]))
        ids.append(image_id)
    return np.stack(images), np.array(centres, float), np.array(sigma2, float), ids


def run_train(args):
    import keras

    from lumbar_core.models import build_posenet, posenet_loss
    from lumbar_core.training import HeatmapSequence, set_seed, train_model

    config = yaml.safe_load((_ROOT / "config.yaml").read_text())
    pose, peaks = config["posenet"], config["peaks"]
    workdir = Path(args.workdir)
    train = _load(workdir, args.samples, "train")
    val = _load(workdir, args.samples, "val")
    other = _load(Path(args.other_workdir), args.samples, "val") if args.other_workdir else None
    print(f"train {len(train[3])} images, val {len(val[3])} images, {args.epochs} epochs, "
          f"Pose-net width {pose['width']} depth {pose['depth']} downsample {pose['downsample']}")
    print("setting  best_epoch  best_val_loss  val_y_l15  val_y_l5  five_found  centre_error_px  minutes")
    for name in args.settings:
        start = time.perf_counter()
        set_seed(args.seed)
        train_seq = HeatmapSequence(*train[:3], batch_size=pose["batch_size"], augment=True,
                                    seed=args.seed, augment_kwargs=settings(name))
        val_seq = HeatmapSequence(*val[:3], batch_size=pose["batch_size"], augment=False,
                                  seed=args.seed)
        model = build_posenet(width=pose["width"], depth=pose["depth"],
                              downsample=pose["downsample"])
        history = train_model(model, train_seq, val_seq, loss=posenet_loss(), epochs=args.epochs,
                              warmup_epochs=pose["warmup_epochs"], patience=None,
                              seed=args.seed, log=sys.stdout)
        best = history.loc[history["best"]].iloc[0]
        found, error = _centre_error(model, val, peaks)
        print(f"{name:<8} {int(best['epoch']):>10}  {best['val_loss']:13.3f}  "
              f"{best.get('val_y_l15_loss', np.nan):9.3f}  {best.get('val_y_l5_loss', np.nan):8.3f}  "
              f"{found:>4} / {len(val[3]):<3}  {error:15.2f}  {(time.perf_counter() - start) / 60:7.1f}",
              flush=True)
        if other is not None:
            loss = model.evaluate(HeatmapSequence(*other[:3], batch_size=pose["batch_size"]),
                                  verbose=0, return_dict=True)
            found, error = _centre_error(model, other, peaks)
            print(f"  {name} on {args.other_workdir} val: loss {loss['loss']:.3f}, "
                  f"five found {found} / {len(other[3])}, centre error {error:.2f} px", flush=True)
        keras.backend.clear_session()


def _centre_error(model, data, peaks):
    """Images where the peak selection finds five centres, and their mean centre error (I px)."""
    from lumbar_core.localize import select_peaks
    from lumbar_core.models import predict_heatmaps

    _, y_l15 = predict_heatmaps(model, data[0])
    # The config's peak settings as rule select_peaks passes them (the plausibility limits
    # are another function's), so a setting added there is used here too.
    settings = {key: value for key, value in peaks.items() if key != "plausibility"}
    errors = []
    for k in range(len(data[3])):
        chosen = select_peaks(y_l15[k], **settings)
        if chosen["status"] == "ok":
            got = np.array([chosen["centres"][f"L{j}"] for j in range(1, 6)], float)
            errors.append(np.hypot(*(got - data[1][k]).T).mean())
    return len(errors), (float(np.mean(errors)) if errors else float("nan"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    timing = sub.add_parser("time", help="time per image and per patch")
    timing.add_argument("--repeats", type=int, default=30)
    timing.add_argument("--patch-sizes", type=int, nargs="+", default=[128, 224])
    training = sub.add_parser("train", help="Pose-net validation figures per setting")
    training.add_argument("--workdir", required=True)
    training.add_argument("--samples", default="resources/demo/samples.tsv")
    training.add_argument("--epochs", type=int, default=15)
    training.add_argument("--settings", nargs="+", default=["paper", "wide"])
    training.add_argument("--seed", type=int, default=0)
    training.add_argument("--other-workdir", help="score the models on this cohort's val split too")
    args = parser.parse_args(argv)
    (run_time if args.command == "time" else run_train)(args)


if __name__ == "__main__":
    main()
