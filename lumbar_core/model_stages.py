"""One function per model rule (training and sharded inference).

Keras is imported inside the functions, after the job has claimed its GPU
(:func:`lumbar_core.workflow.gpu.gpu_slot`), so that ``CUDA_VISIBLE_DEVICES`` is set before any
framework starts. Inference works on a shard of images with the model loaded once and
writes one file per image, ``<out_dir>/<image_id>.npz``, carrying each image's status.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from . import io
from .localize import l5_sigma2
from .stages import (
    _record,
    load_geometry,
    patch_probabilities_to_masks,
    status_of,
    whole_probabilities_to_masks,
)

__all__ = [
    "run_train_posenet",
    "run_train_segmentation",
    "run_train_whole",
    "run_pose_infer",
    "run_segment_infer",
    "run_whole_infer",
]


def _image_id(path) -> str:
    return Path(path).name.split(".")[0]


def _split(paths, train_ids, val_ids):
    by_id = {_image_id(p): p for p in paths}
    return [by_id[i] for i in train_ids], [by_id[i] for i in val_ids]


def _augment_kwargs(training: dict) -> dict:
    aug = training["augment"]
    return {"max_rotation_deg": aug["max_rotation_deg"], "max_shift_frac": aug["max_shift_frac"],
            "contrast_range": tuple(aug["contrast_range"])}


def _fit(model, train_seq, val_seq, *, loss, settings, training, out_model, out_history, log,
         epochs_csv=None):
    from .models import save_model
    from .training import train_model

    history = train_model(model, train_seq, val_seq, loss=loss, epochs=settings["epochs"],
                          warmup_epochs=settings["warmup_epochs"], warmup_lr=training["warmup_lr"],
                          lr=training["lr"], patience=settings["patience"], log=log,
                          csv_log=epochs_csv, seed=training["seed"])
    save_model(model, out_model)
    io.write_table(out_history, history)
    return history


def _heatmap_data(image_paths, point_paths):
    images, centres, sigma2 = [], [], []
    for ip, pp in zip(image_paths, point_paths):
        data, points = io.load_npz(ip), io.read_json(pp)
        if status_of(data)[0] != "ok" or points.get("status") != "ok":
            print(f"{_image_id(ip)}: skipped ({points.get('message') or status_of(data)[1]})",
                  file=sys.stderr)
            continue
        images.append(data["i"].astype(np.float32))
        centres.append(points["centres_i"])
        sigma2.append(l5_sigma2(points["l5_height_i"]))
    if not images:
        raise ValueError("no usable annotated image in this split")
    return np.stack(images), np.array(centres, dtype=np.float32), np.array(sigma2, np.float32)


def run_train_posenet(image_paths, point_paths, out_model, out_history, *, train_ids, val_ids,
                      settings: dict, training: dict, log=sys.stderr,
                      epochs_csv=None):
    """Rule ``train_posenet``: Pose-net on the train split, early stopping on val."""
    from .models.posenet import build_posenet, posenet_loss
    from .training import HeatmapSequence, set_seed

    set_seed(training["seed"], deterministic=training.get("deterministic", True))
    tr_i, va_i = _split(image_paths, train_ids, val_ids)
    tr_p, va_p = _split(point_paths, train_ids, val_ids)
    kw = {"batch_size": settings["batch_size"]}
    train_seq = HeatmapSequence(*_heatmap_data(tr_i, tr_p), augment=True, seed=training["seed"],
                                augment_kwargs=_augment_kwargs(training), **kw)
    val_seq = HeatmapSequence(*_heatmap_data(va_i, va_p), augment=False, seed=training["seed"], **kw)
    model = build_posenet(width=settings["width"], depth=settings["depth"],
                          downsample=settings["downsample"])
    return _fit(model, train_seq, val_seq, loss=posenet_loss(), settings=settings,
                training=training, out_model=out_model, out_history=out_history, log=log,
                epochs_csv=epochs_csv)


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


def _segmentation_model(arch, input_shape, num_classes, filters):
    from .models.whole import segmentation_network

    build, loss = segmentation_network(arch, "_segmentation_model")
    return build(input_shape, num_classes=num_classes, filters=tuple(filters)), loss()


def run_train_segmentation(arch, patch_paths, out_model, out_history, *, train_ids, val_ids,
                           settings: dict, training: dict, log=sys.stderr,
                           epochs_csv=None):
    """Rules ``train_mnet`` and ``train_unet``: per-vertebra patch segmentation (Eq. 7, 8)."""
    from .training import SegmentationSequence, set_seed

    set_seed(training["seed"], deterministic=training.get("deterministic", True))
    tr, va = _split(patch_paths, train_ids, val_ids)
    size = settings["patch_size"]
    model, loss = _segmentation_model(arch, (size, size, 1), 2, settings["filters"])
    names = list(model.output_names)
    kw = {"num_classes": 2, "batch_size": settings["batch_size"], "output_names": names}
    train_seq = SegmentationSequence(*_patch_data(tr), augment=True, seed=training["seed"],
                                     augment_kwargs=_augment_kwargs(training), **kw)
    val_seq = SegmentationSequence(*_patch_data(va), augment=False, seed=training["seed"], **kw)
    return _fit(model, train_seq, val_seq, loss=loss, settings=settings, training=training,
                out_model=out_model, out_history=out_history, log=log,
                epochs_csv=epochs_csv)


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


def run_train_whole(arch, image_paths, mask_paths, out_model, out_history, *, train_ids, val_ids,
                    settings: dict, training: dict, log=sys.stderr,
                    epochs_csv=None):
    """Rules ``train_mnet_whole``/``train_unet_whole``: Table 2's "Original" baselines."""
    from .models.whole import build_whole_image, whole_image_loss
    from .preprocess import I_SHAPE
    from .training import SegmentationSequence, set_seed

    set_seed(training["seed"], deterministic=training.get("deterministic", True))
    tr_i, va_i = _split(image_paths, train_ids, val_ids)
    tr_m, va_m = _split(mask_paths, train_ids, val_ids)
    model = build_whole_image(arch, (*I_SHAPE, 1), num_classes=6, filters=settings["filters"],
                              downsample=settings.get("downsample", 1))
    loss = whole_image_loss(arch)
    kw = {"num_classes": 6, "batch_size": settings["batch_size"],
          "output_names": list(model.output_names)}
    train_seq = SegmentationSequence(*_whole_data(tr_i, tr_m), augment=True, seed=training["seed"],
                                     augment_kwargs=_augment_kwargs(training), **kw)
    val_seq = SegmentationSequence(*_whole_data(va_i, va_m), augment=False, seed=training["seed"], **kw)
    return _fit(model, train_seq, val_seq, loss=loss, settings=settings, training=training,
                out_model=out_model, out_history=out_history, log=log,
                epochs_csv=epochs_csv)


def run_pose_infer(model_path, image_paths, out_dir, *, log=sys.stderr) -> None:
    """Rule ``pose_infer``: ``yL5`` and ``yL1-5`` (float16) for every image of a shard."""
    from .models import load_model, predict_heatmaps

    model = load_model(model_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in image_paths:
        data = io.load_npz(path)
        status, message = status_of(data)
        target = out_dir / f"{_image_id(path)}.npz"
        if status != "ok":
            io.save_npz(target, status=status, message=message)
            continue
        y_l5, y_l15 = predict_heatmaps(model, data["i"].astype(np.float32)[None])
        io.save_npz(target, y_l5=y_l5[0].astype(np.float16), y_l15=y_l15[0].astype(np.float16),
                    status="ok", message="")
        print(f"{_image_id(path)}: max yL1-5 {float(y_l15.max()):.3f}", file=log)


def run_segment_infer(model_path, crop_paths, geometry_paths, out_dir, *, threshold=0.5,
                      log=sys.stderr) -> None:
    """Rules ``mnet_infer``/``unet_infer``: patch probabilities, the kept binary patch masks
    and their pasted-back labels (:func:`lumbar_core.stages.patch_probabilities_to_masks`)."""
    from .models import load_model, predict_segmentation

    model = load_model(model_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for crop_path, geometry_path in zip(crop_paths, geometry_paths):
        image_id = _image_id(crop_path)
        crops = io.load_npz(crop_path)
        status, message = status_of(crops)
        if status != "ok":
            io.save_npz(out_dir / f"{image_id}.npz", status=status, message=message)
            continue
        geometry, _ = load_geometry(geometry_path)
        probs = predict_segmentation(model, crops["patches"].astype(np.float32))
        masks = patch_probabilities_to_masks(probs[..., 1], crops["boxes"], geometry,
                                             threshold=threshold)
        io.save_npz(out_dir / f"{image_id}.npz", **masks, **_record("ok"))
        print(f"{image_id}: {np.count_nonzero(masks['labels_io'])} px labelled in Io", file=log)


def run_whole_infer(model_path, image_paths, geometry_paths, out_dir, *, log=sys.stderr) -> None:
    """Rules ``mnet_whole_infer``/``unet_whole_infer``: 6-class masks back in Io and input."""
    from .models import load_model, predict_segmentation

    model = load_model(model_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, geometry_path in zip(image_paths, geometry_paths):
        image_id = _image_id(path)
        data = io.load_npz(path)
        status, message = status_of(data)
        if status != "ok":
            io.save_npz(out_dir / f"{image_id}.npz", status=status, message=message)
            continue
        geometry, _ = load_geometry(geometry_path)
        probs = predict_segmentation(model, data["i"].astype(np.float32)[None])[0]
        io.save_npz(out_dir / f"{image_id}.npz", **whole_probabilities_to_masks(probs, geometry),
                    **_record("ok"))
        print(f"{image_id}: done", file=log)


def _tuning_cases(io_paths, points_paths, masks_paths, geometry_paths, *, patch_size: int,
                  jitter_px: float, seed: int, max_images, log):
    """Validation images as the level-set tuning sees them: patches, boxes, true Io labels.

    The validation images have no Pose-net run, so their Eq. 6 boxes come from the
    ground-truth centres perturbed as for the training patches (Gaussian noise of std
    ``jitter_px`` Io pixels, one draw per image from ``seed`` and the image id), which
    mimics test-time localisation error. Patches are stored as rule ``crop`` stores them
    (float16). Excluded images are skipped; ``max_images`` (None: all) keeps a
    seeded random choice of the images.
    """
    from .crop import crop_boxes, extract_patches
    from .stages import _stable_seed, load_io

    cases = []
    for io_path, points_path, masks_path, geometry_path in zip(
            io_paths, points_paths, masks_paths, geometry_paths):
        image_id = _image_id(io_path)
        image, record = load_io(io_path)
        geometry, _ = load_geometry(geometry_path)
        points = io.read_json(points_path)
        if image is None or geometry is None or points.get("status") != "ok":
            print(f"{image_id}: skipped, {record['message'] or points.get('message', '')}", file=log)
            continue
        truth = io.load_npz(masks_path)["io"]
        if truth.shape != tuple(geometry.io_shape):
            raise ValueError(f"{masks_path}: ground-truth Io mask of shape {truth.shape}, "
                             f"expected {tuple(geometry.io_shape)}")
        rng = np.random.default_rng(_stable_seed(seed, f"{image_id}/tune_levelset"))
        centres = np.array(points["centres_io"], dtype=np.float64)
        boxes = crop_boxes(centres + rng.normal(0.0, jitter_px, size=centres.shape))
        patches = extract_patches(image, boxes, patch_size=patch_size).astype(np.float16)
        cases.append({"image_id": image_id, "patches": patches.astype(np.float32),
                      "boxes": boxes, "truth": truth})
    if max_images is not None and len(cases) > max_images:
        keep = np.sort(np.random.default_rng(seed).permutation(len(cases))[:max_images])
        cases = [cases[i] for i in keep]
    return cases


def run_tune_levelset(model_paths: dict, io_paths, points_paths, masks_paths, geometry_paths,
                      out_table, out_params, *, settings: dict, patch_size: int,
                      jitter_px: float, threshold: float = 0.5, seed: int = 0,
                      log=sys.stderr) -> dict:
    """Rule ``tune_levelset``: each network's level-set coefficients, chosen on validation.

    For each network (M-net, U-net) the network segments the validation images' patches
    (:func:`_tuning_cases`), and every combination of ``settings["search"]`` refines
    that network's own masks. A combination is scored as Table 2 scores a method: the
    refined masks are pasted into ``Io`` by the workflow's paste rule and the Dice of
    the union of the five levels against the ground truth is averaged over the images
    (:func:`lumbar_core.levelset.search_parameters`). The best combination of each
    network replaces the configured values (the other coefficients keep theirs). With an
    empty search, or no usable validation image, the configured values are written for
    every network. The test split is never seen here.

    Parameters
    ----------
    model_paths : dict of str to path
        Network name (``"mnet"``, ``"unet"``) to its ``.keras`` file.
    io_paths, points_paths, masks_paths, geometry_paths : sequence of path
        Per validation image, in one order: preprocessed ``Io``, ground-truth points
        JSON, ground-truth masks npz (key ``io``) and geometry JSON.
    out_table : path
        CSV of every search: one row per network and combination, a ``network`` column,
        the network's own masks as rows with ``refined`` False, ``chosen`` marking the
        winners.
    out_params : path
        JSON ``{network: {coefficient: value}}``, read by rule ``levelset_refine``.
    settings : dict
        The config's ``levelset`` section: coefficients, ``search`` (field -> values)
        and ``tune_max_images`` (None: every validation image).
    patch_size : int
        Side of the patches, as rule ``crop`` makes them.
    jitter_px : float
        Std of the noise added to the ground-truth centres, ``Io`` pixels.
    threshold : float, optional
        Foreground probability threshold of the networks; default 0.5.
    seed : int, optional
        Seed of the centre noise and of the choice of images; default 0.
    log : file, optional
        Where progress goes.

    Returns
    -------
    dict
        The chosen coefficients per network, as written to ``out_params``.
    """
    import dataclasses

    import pandas as pd

    from .levelset import LevelSetParams, search_parameters

    fields = {f.name for f in dataclasses.fields(LevelSetParams)}
    base = LevelSetParams(**{k: v for k, v in settings.items() if k in fields})
    grid = {k: list(v) for k, v in (settings.get("search") or {}).items()}
    max_images = settings.get("tune_max_images")
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int)
                                   or max_images < 1):
        raise ValueError(f"tune_max_images must be an integer >= 1 or None; got {max_images!r}")
    chosen = {net: dataclasses.asdict(base) for net in model_paths}
    tables = []
    cases = []
    if grid and io_paths:
        cases = _tuning_cases(io_paths, points_paths, masks_paths, geometry_paths,
                              patch_size=patch_size, jitter_px=jitter_px, seed=seed,
                              max_images=max_images, log=log)
    if cases:
        from .crop import keep_centre_component
        from .models import load_model, predict_segmentation

        patches = np.stack([c["patches"] for c in cases])
        boxes = np.stack([c["boxes"] for c in cases])
        truths = [c["truth"] for c in cases]
        n, k, size = patches.shape[0], patches.shape[1], patches.shape[2]
        print(f"{n} validation images: {', '.join(c['image_id'] for c in cases)}", file=log)
        for net, model_path in model_paths.items():
            probs = predict_segmentation(load_model(model_path), patches.reshape(n * k, size, size))
            masks = np.stack([keep_centre_component(p > threshold) for p in probs[..., 1]])
            rows = search_parameters(patches, masks.reshape(n, k, size, size), boxes, truths,
                                     grid, base=base)
            best = next(r for r in rows if r["chosen"])
            chosen[net].update({name: best[name] for name in grid})
            print(f"{net}: pasted Dice of its own masks {rows[0]['dice_mean']:.4f}, best refined "
                  f"{best['dice_mean']:.4f} with {({name: best[name] for name in grid})}", file=log)
            tables.append(pd.DataFrame(rows).assign(network=net))
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(
        columns=["network", *grid, "refined", "dice_mean", "dice_sd", "n_images",
                 "converged_pct", "mean_iterations", "chosen"])
    table = table[["network", *[c for c in table.columns if c != "network"]]]
    io.write_table(out_table, table)
    io.write_json(out_params, chosen)
    return chosen
