"""The per-image rules' calls, for a job of one image and for a job of a shard of images.

Every per-image rule (``preprocess``, ``resize``, ``ground_truth``, ``train_patches``,
``select_peaks``, ``crop``, ``levelset_refine``, ``metrics``, ``morphometry``,
``image_overlay``) runs either as one Snakemake job per image or, with
``per_image_steps.jobs: shard``, as one job per shard of images (rule ``<step>_shard``,
``rules/shards.smk``), where the job's start-up (an interpreter and the library's
imports, about half a second) is paid once a shard instead of once an image. Both call
the same function of this module with one image's files, so that a shard job writes
byte for byte what the per-image jobs would.

Each function takes the image id and its ``input``, ``output`` and ``params`` (Snakemake's,
or mappings read the same way, by key or attribute, built by :func:`run_shard`) and
returns the line it logs.
An input that is an inference rule's shard folder (``maps``, ``mnet``, ``unet``,
``mnet_whole``, ``unet_whole``) holds ``<image_id>.npz``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

__all__ = ["STEPS", "image_paths", "run_image", "run_shard"]


def _status(image_id, record) -> str:
    return f"{image_id}: {record['status']} {record.get('message', '')}".rstrip()


def preprocess(image_id, input, output, params):
    from ..steps import preprocess as step

    return _status(image_id, step.preprocess(
        image=input.image, out_io=output.io, out_geometry=output.geometry,
        image_id=image_id, settings=params.settings, spacing=params.spacing))


def resize(image_id, input, output, params):
    from ..steps import preprocess as step

    return _status(image_id, step.resize(io_image=input.io, geometry=input.geometry,
                                         out=output.i))


def ground_truth(image_id, input, output, params):
    from ..steps import preprocess as step

    return _status(image_id, step.ground_truth(
        annotation=input.annotation, geometry=input.geometry,
        out_points=output.points, out_masks=output.masks))


def train_patches(image_id, input, output, params):
    from ..steps import train

    settings = params.settings
    return _status(image_id, train.train_patches(
        io_image=input.io, points=input.points, masks=input.masks, out=output.patches,
        image_id=image_id, seed=params.seed, patch_size=settings["patch_size"],
        jitter_px=settings["jitter_px"], jitter_copies=settings["jitter_copies"]))


def select_peaks(image_id, input, output, params):
    from ..steps import pose

    return _status(image_id, pose.select_peaks(
        maps=Path(input.maps) / f"{image_id}.npz", geometry=input.geometry,
        out=output.peaks, settings=params.settings, annotated=bool(params.annotated)))


def crop(image_id, input, output, params):
    from ..steps import segment

    return _status(image_id, segment.crop(io_image=input.io, peaks=input.peaks,
                                          out=output.patches, patch_size=params.patch_size))


def levelset_refine(image_id, input, output, params):
    from ..steps import levelset

    record = levelset.levelset_refine(
        patches=input.patches,
        network_masks={m: Path(input[m]) / f"{image_id}.npz" for m in ("mnet", "unet")},
        geometry=input.geometry, out=output.masks, params=input.params)
    lines = [f"{image_id} {key}: {info}" for key, info in record.get("levelset", {}).items()]
    return "\n".join([*lines, _status(image_id, record)])


def metrics(image_id, input, output, params):
    from ..steps import evaluate

    # The refined masks are one file per image; the other predictions one folder per shard.
    predictions = {
        name: input[name] if name == "refined" else Path(input[name]) / f"{image_id}.npz"
        for name in evaluate.PREDICTION_SOURCES
    }
    evaluate.metrics(image_id=image_id, points=input.points, masks=input.masks,
                     peaks=input.peaks, predictions=predictions,
                     out_segmentation=output.segmentation,
                     out_localization=output.localization)
    return f"{image_id}: done"


def morphometry(image_id, input, output, params):
    from ..steps import morphometry as step

    step.morphometry(image_id=image_id, refined=input.refined, geometry=input.geometry,
                     peaks=input.peaks, out=output.heights, points=input.points or None,
                     masks=input.masks or None)
    return f"{image_id}: done"


def image_overlay(image_id, input, output, params):
    from ..steps import report

    return report.image_overlay(image_id=image_id, image=input.image, peaks=input.peaks,
                                geometry=input.geometry, refined=input.refined,
                                out_png=output.png, points=input.points or None)


#: Rule name -> the call of one image.
STEPS = {f.__name__: f for f in (preprocess, resize, ground_truth, train_patches,
                                 select_peaks, crop, levelset_refine, metrics, morphometry,
                                 image_overlay)}


class _Named(dict):
    """One image's input, output or params in a shard job, by key or as attributes, as
    Snakemake gives them to a per-image job."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def run_image(snakemake, log=sys.stderr) -> None:
    """The script of a per-image rule: its step on its one image."""
    step = STEPS[snakemake.rule]
    print(step(snakemake.wildcards.image_id, snakemake.input, snakemake.output,
               snakemake.params), file=log)


def run_shard(snakemake, log=sys.stderr) -> None:
    """The script of a ``<step>_shard`` rule: its step on every image of the shard.

    ``params.jobs`` lists, per image, its ``image_id`` and the ``input``, ``output`` and
    ``params`` its per-image job would get (``rules/shards.smk``). The output folders
    are the shard's; each image's files inside them keep their per-image names. An
    image that a step records as excluded (an unreadable film, a failed detection) is
    written as such and the shard goes on; an error that the step does not expect
    stops the shard with the image's id, as it would stop that image's own job.
    """
    step = STEPS[snakemake.rule.removesuffix("_shard")]
    for folder in snakemake.output:
        Path(folder).mkdir(parents=True, exist_ok=True)
    jobs = snakemake.params.jobs
    start = time.monotonic()
    for k, job in enumerate(jobs, 1):
        image_id = job["image_id"]
        try:
            line = step(image_id, _Named(job["input"]), _Named(job["output"]),
                        _Named(job["params"]))
        except Exception as err:
            raise RuntimeError(f"rule {snakemake.rule}, shard {snakemake.wildcards.part}, "
                               f"image {image_id}: {err}") from err
        print(f"[{k}/{len(jobs)}, {time.monotonic() - start:.1f} s] {line}", file=log,
              flush=True)


def image_paths(inputs, ids) -> list[str]:
    """Each image's file among a rule's inputs, in the order of ``ids``.

    ``inputs`` lists either the files themselves, one an image in the order of ``ids``
    (one job per image), or the shard folders that hold them (per-shard jobs), in which
    an image's file is named ``<image_id>.<suffix>``.

    Examples
    --------
    >>> image_paths(["results/a/x.json", "results/a/y.json"], ["x", "y"])
    ['results/a/x.json', 'results/a/y.json']
    """
    inputs = [str(p) for p in inputs]
    ids = list(ids)
    folders = [p for p in inputs if os.path.isdir(p)]
    if not folders:
        if len(inputs) != len(ids):
            raise ValueError(f"{len(inputs)} files for {len(ids)} images")
        return inputs
    found = {}
    for folder in folders:
        with os.scandir(folder) as entries:
            for entry in entries:
                found.setdefault(entry.name.split(".", 1)[0], entry.path)
    missing = [i for i in ids if i not in found]
    if missing:
        raise FileNotFoundError(f"no file of image(s) {', '.join(missing[:5])} in the shard "
                                f"folders {', '.join(folders[:3])}")
    return [found[i] for i in ids]
