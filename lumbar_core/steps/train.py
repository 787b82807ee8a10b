"""Rules of ``rules/train.smk``: every model of the paper, trained on the train split.

The validation split serves early stopping. Keras is imported inside the training
functions, after the job has claimed its GPU
(:func:`lumbar_core.workflow.environment.model_job`); ``train_patches`` is a per-image CPU
step and imports no framework.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from .. import io
from ..crop import jittered_patches, stable_seed
from ..localize import l5_sigma2
from ._common import StrPath, forward_exclusion, image_id_of, load_io, record, status_of

__all__ = [
    "train_posenet",
    "train_patches",
    "train_mnet",
    "train_unet",
    "train_mnet_whole",
    "train_unet_whole",
]


def _split(paths, train_ids, val_ids):
    by_id = {image_id_of(p): p for p in paths}
    return [by_id[i] for i in train_ids], [by_id[i] for i in val_ids]


def _augment_kwargs(training: dict) -> dict:
    """``training.augment`` as keyword arguments of ``training.augment_pair`` (ranges as tuples)."""
    return {key: tuple(value) if isinstance(value, list) else value
            for key, value in training["augment"].items()}


def _fit(model, train_seq, val_seq, *, loss, settings, training, out_model, out_history, log,
         epochs_csv=None):
    from ..models import save_model
    from ..training import train_model

    history = train_model(model, train_seq, val_seq, loss=loss, epochs=settings["epochs"],
                          warmup_epochs=settings["warmup_epochs"], warmup_lr=training["warmup_lr"],
                          lr=training["lr"], patience=settings["patience"], log=log,
                          csv_log=epochs_csv, seed=training["seed"])
    save_model(model, out_model)
    io.write_table(out_history, history)
    return history


def _heatmap_data(image_paths, point_paths, log):
    images, centres, sigma2 = [], [], []
    for ip, pp in zip(image_paths, point_paths):
        data, points = io.load_npz(ip), io.read_json(pp)
        if status_of(data)[0] != "ok" or points.get("status") != "ok":
            print(f"{image_id_of(ip)}: skipped ({points.get('message') or status_of(data)[1]})",
                  file=log)
            continue
        images.append(data["i"].astype(np.float32))
        centres.append(points["centres_i"])
        sigma2.append(l5_sigma2(points["l5_height_i"]))
    if not images:
        raise ValueError("no usable annotated image in this split")
    return np.stack(images), np.array(centres, dtype=np.float32), np.array(sigma2, np.float32)


_TRAIN_PARAMETERS = """
    train_ids, val_ids : sequence of str
        Image ids of the train and validation splits (the inputs hold both).
    settings : dict
        The model's config section: ``epochs``, ``warmup_epochs``, ``patience``,
        ``batch_size`` and the architecture's options.
    training : dict
        The config's ``training`` section: learning rates, seed, augmentation.
    log : file, optional
        Where progress goes.
    epochs_csv : path, optional
        Where the per-epoch log is written as it runs.

    Returns
    -------
    DataFrame
        The loss history, as written to ``out_history``."""


def train_posenet(*, images: Sequence[StrPath], points: Sequence[StrPath], out_model: StrPath,
                  out_history: StrPath, train_ids: Sequence[str], val_ids: Sequence[str],
                  settings: dict, training: dict, log=sys.stderr, epochs_csv=None):
    from ..models.posenet import build_posenet, posenet_loss
    from ..training import HeatmapSequence, set_seed

    set_seed(training["seed"], deterministic=training.get("deterministic", True))
    tr_i, va_i = _split(images, train_ids, val_ids)
    tr_p, va_p = _split(points, train_ids, val_ids)
    kw = {"batch_size": settings["batch_size"]}
    train_seq = HeatmapSequence(*_heatmap_data(tr_i, tr_p, log), augment=True,
                                seed=training["seed"], augment_kwargs=_augment_kwargs(training),
                                **kw)
    val_seq = HeatmapSequence(*_heatmap_data(va_i, va_p, log), augment=False,
                              seed=training["seed"], **kw)
    model = build_posenet(width=settings["width"], depth=settings["depth"],
                          downsample=settings["downsample"])
    return _fit(model, train_seq, val_seq, loss=posenet_loss(), settings=settings,
                training=training, out_model=out_model, out_history=out_history, log=log,
                epochs_csv=epochs_csv)


train_posenet.__doc__ = """Rule ``train_posenet``: Pose-net (Eq. 1-5) on ``I``, heatmap targets
    from the ground-truth centres (Eq. 4, 5), early stopping on the validation split.

    Parameters
    ----------
    images : sequence of path
        ``I`` npz files of the train and validation images.
    points : sequence of path
        Their ground-truth JSON files (rule ``ground_truth``).
    out_model, out_history : path
        The ``.keras`` model and the loss history CSV.""" + _TRAIN_PARAMETERS


def train_patches(*, io_image: StrPath, points: StrPath, masks: StrPath, out: StrPath,
                  image_id: str, seed: int, patch_size: int, jitter_px: float,
                  jitter_copies: int) -> dict:
    """Rule ``train_patches``: Eq. 6 patches from ground-truth centres plus random jitter.

    The patches and the centre vertebra's mask of each are
    :func:`lumbar_core.crop.jittered_patches`'s, with the noise seeded by ``seed`` and the
    image id (:func:`lumbar_core.crop.stable_seed`), so that an image's patches do not
    depend on the cohort or the order of the jobs.

    Parameters
    ----------
    io_image : path
        The image's ``Io`` npz.
    points, masks : path
        The image's ground-truth JSON and masks npz (rule ``ground_truth``).
    out : path
        Output npz: ``patches`` (float16) and ``masks`` (uint8 0/1).
    image_id : str
        The image's id.
    seed : int
        The training seed.
    patch_size : int
        Side of the patches.
    jitter_px : float
        Std of the noise on the centres, ``Io`` pixels.
    jitter_copies : int
        Number of perturbed draws per image.

    Returns
    -------
    dict
        The status record.
    """
    image, io_record = load_io(io_image)
    truth = io.read_json(points)
    if image is None or truth.get("status") != "ok":
        return forward_exclusion("excluded", io_record["message"] or truth.get("message", ""),
                                 npz_outputs=[out])
    labels = io.load_npz(masks)["io"]
    rng = np.random.default_rng(stable_seed(seed, image_id))
    patches, targets = jittered_patches(image, labels, np.array(truth["centres_io"]), rng=rng,
                                        patch_size=patch_size, jitter_px=jitter_px,
                                        copies=jitter_copies)
    io.save_npz(out, patches=patches, masks=targets, **record("ok"))
    return record("ok")


def _patch_data(paths):
    patches, masks = [], []
    for p in paths:
        data = io.load_npz(p)
        if status_of(data)[0] == "ok":
            patches.append(data["patches"].astype(np.float32))
            masks.append(data["masks"])
    if not patches:
        raise ValueError("no usable training patches in this split")
    return np.concatenate(patches), np.concatenate(masks)


def _train_segmentation(arch, patches, out_model, out_history, *, train_ids, val_ids,
                        settings, training, log, epochs_csv):
    from ..models.whole import segmentation_network
    from ..training import SegmentationSequence, set_seed

    set_seed(training["seed"], deterministic=training.get("deterministic", True))
    tr, va = _split(patches, train_ids, val_ids)
    size = settings["patch_size"]
    build, make_loss = segmentation_network(arch, "_train_segmentation")
    model = build((size, size, 1), num_classes=2, filters=tuple(settings["filters"]))
    loss = make_loss()
    names = list(model.output_names)
    kw = {"num_classes": 2, "batch_size": settings["batch_size"], "output_names": names}
    train_seq = SegmentationSequence(*_patch_data(tr), augment=True, seed=training["seed"],
                                     augment_kwargs=_augment_kwargs(training), **kw)
    val_seq = SegmentationSequence(*_patch_data(va), augment=False, seed=training["seed"], **kw)
    return _fit(model, train_seq, val_seq, loss=loss, settings=settings,
                training=training, out_model=out_model, out_history=out_history, log=log,
                epochs_csv=epochs_csv)


_SEGMENTATION_DOC = """Rule ``{rule}``: {network} on the 224 x 224 patches, the centre
    vertebra's mask as target ({eqs}).

    Parameters
    ----------
    patches : sequence of path
        Training patch npz files (rule ``train_patches``) of the train and validation
        images.
    out_model, out_history : path
        The ``.keras`` model and the loss history CSV.""" + _TRAIN_PARAMETERS


def train_mnet(*, patches: Sequence[StrPath], out_model: StrPath, out_history: StrPath,
               train_ids: Sequence[str], val_ids: Sequence[str], settings: dict,
               training: dict, log=sys.stderr, epochs_csv=None):
    return _train_segmentation("mnet", patches, out_model, out_history, train_ids=train_ids,
                               val_ids=val_ids, settings=settings, training=training, log=log,
                               epochs_csv=epochs_csv)


def train_unet(*, patches: Sequence[StrPath], out_model: StrPath, out_history: StrPath,
               train_ids: Sequence[str], val_ids: Sequence[str], settings: dict,
               training: dict, log=sys.stderr, epochs_csv=None):
    return _train_segmentation("unet", patches, out_model, out_history, train_ids=train_ids,
                               val_ids=val_ids, settings=settings, training=training, log=log,
                               epochs_csv=epochs_csv)


train_mnet.__doc__ = _SEGMENTATION_DOC.format(rule="train_mnet", network="M-net",
                                              eqs="Eq. 7, 8")
train_unet.__doc__ = _SEGMENTATION_DOC.format(rule="train_unet", network="the U-net",
                                              eqs="the same recipe")


def _whole_data(image_paths, mask_paths):
    images, labels = [], []
    for ip, mp in zip(image_paths, mask_paths):
        data, masks = io.load_npz(ip), io.load_npz(mp)
        if status_of(data)[0] == "ok" and status_of(masks)[0] == "ok":
            images.append(data["i"].astype(np.float32))
            labels.append(masks["i"])
    if not images:
        raise ValueError("no usable annotated image in this split")
    return np.stack(images), np.stack(labels)


def _train_whole(arch, images, masks, out_model, out_history, *, train_ids, val_ids, settings,
                 training, log, epochs_csv):
    from ..models.whole import build_whole_image, whole_image_loss
    from ..preprocess import I_SHAPE
    from ..training import SegmentationSequence, set_seed

    set_seed(training["seed"], deterministic=training.get("deterministic", True))
    tr_i, va_i = _split(images, train_ids, val_ids)
    tr_m, va_m = _split(masks, train_ids, val_ids)
    model = build_whole_image(arch, (*I_SHAPE, 1), num_classes=6, filters=settings["filters"],
                              downsample=settings.get("downsample", 1))
    loss = whole_image_loss(arch)
    kw = {"num_classes": 6, "batch_size": settings["batch_size"],
          "output_names": list(model.output_names)}
    train_seq = SegmentationSequence(*_whole_data(tr_i, tr_m), augment=True, seed=training["seed"],
                                     augment_kwargs=_augment_kwargs(training), **kw)
    val_seq = SegmentationSequence(*_whole_data(va_i, va_m), augment=False, seed=training["seed"],
                                   **kw)
    return _fit(model, train_seq, val_seq, loss=loss, settings=settings, training=training,
                out_model=out_model, out_history=out_history, log=log, epochs_csv=epochs_csv)


_WHOLE_DOC = """Rule ``{rule}``: Table 2's "Original {network}", the whole ``I`` in, L1..L5 out
    (6 classes).

    Parameters
    ----------
    images : sequence of path
        ``I`` npz files of the train and validation images.
    masks : sequence of path
        Their ground-truth masks npz files (key ``i``).
    out_model, out_history : path
        The ``.keras`` model and the loss history CSV.""" + _TRAIN_PARAMETERS


def train_mnet_whole(*, images: Sequence[StrPath], masks: Sequence[StrPath],
                     out_model: StrPath, out_history: StrPath, train_ids: Sequence[str],
                     val_ids: Sequence[str], settings: dict, training: dict, log=sys.stderr,
                     epochs_csv=None):
    return _train_whole("mnet", images, masks, out_model, out_history, train_ids=train_ids,
                        val_ids=val_ids, settings=settings, training=training, log=log,
                        epochs_csv=epochs_csv)


def train_unet_whole(*, images: Sequence[StrPath], masks: Sequence[StrPath],
                     out_model: StrPath, out_history: StrPath, train_ids: Sequence[str],
                     val_ids: Sequence[str], settings: dict, training: dict, log=sys.stderr,
                     epochs_csv=None):
    return _train_whole("unet", images, masks, out_model, out_history, train_ids=train_ids,
                        val_ids=val_ids, settings=settings, training=training, log=log,
                        epochs_csv=epochs_csv)


train_mnet_whole.__doc__ = _WHOLE_DOC.format(rule="train_mnet_whole", network="M-net")
train_unet_whole.__doc__ = _WHOLE_DOC.format(rule="train_unet_whole", network="U-net")
