"""Rules of ``rules/levelset.smk``: paper 2.4, the level-set coefficients and refinement."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

import numpy as np

from .. import io
from ..levelset import LevelSetParams, choose_tuning_images, refine_and_paste, tuning_patches
from ._common import (
    StrPath,
    forward_exclusion,
    image_id_of,
    load_geometry,
    load_io,
    record,
    status_of,
)

__all__ = ["tune_levelset", "levelset_refine"]


def _tuning_cases(io_paths, points_paths, masks_paths, geometry_paths, *, patch_size,
                  jitter_px, seed, max_images, log) -> list[dict]:
    """Read the validation images (excluded ones skipped) and make their patches."""
    cases = []
    for io_path, points_path, masks_path, geometry_path in zip(
            io_paths, points_paths, masks_paths, geometry_paths):
        image_id = image_id_of(io_path)
        image, io_record = load_io(io_path)
        grid, _ = load_geometry(geometry_path)
        points = io.read_json(points_path)
        if image is None or grid is None or points.get("status") != "ok":
            print(f"{image_id}: skipped, {io_record['message'] or points.get('message', '')}",
                  file=log)
            continue
        truth = io.load_npz(masks_path)["io"]
        if truth.shape != tuple(grid.io_shape):
            raise ValueError(f"{masks_path}: ground-truth Io mask of shape {truth.shape}, "
                             f"expected {tuple(grid.io_shape)}")
        patches, boxes = tuning_patches(image, points["centres_io"], image_id=image_id,
                                        seed=seed, jitter_px=jitter_px, patch_size=patch_size)
        cases.append({"image_id": image_id, "patches": patches, "boxes": boxes, "truth": truth})
    keep = choose_tuning_images(len(cases), max_images=max_images, seed=seed)
    return [cases[i] for i in keep]


def tune_levelset(*, models: Mapping[str, StrPath], io_images: Sequence[StrPath],
                  points: Sequence[StrPath], masks: Sequence[StrPath],
                  geometry: Sequence[StrPath], out_table: StrPath, out_params: StrPath,
                  settings: dict, patch_size: int, jitter_px: float, threshold: float = 0.5,
                  seed: int = 0, log=sys.stderr) -> dict:
    """Rule ``tune_levelset``: each network's level-set coefficients, chosen on validation.

    For each network (M-net, U-net) the network segments the validation images' patches
    (:func:`lumbar_core.levelset.tuning_patches`), and every combination of
    ``settings["search"]`` refines that network's own masks. A combination is scored as
    Table 2 scores a method: the refined masks are pasted into ``Io`` by the workflow's
    paste rule and the Dice of the union of the five levels against the ground truth is
    averaged over the images (:func:`lumbar_core.levelset.search_parameters`). The best
    combination of each network replaces the configured values (the other coefficients
    keep theirs). With an empty search, or no usable validation image, the configured
    values are written for every network. The test split is never seen here.

    Parameters
    ----------
    models : dict of str to path
        Network name (``"mnet"``, ``"unet"``) to its ``.keras`` file.
    io_images, points, masks, geometry : sequence of path
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

    from ..levelset import search_parameters

    fields = {f.name for f in dataclasses.fields(LevelSetParams)}
    base = LevelSetParams(**{k: v for k, v in settings.items() if k in fields})
    grid = {k: list(v) for k, v in (settings.get("search") or {}).items()}
    max_images = settings.get("tune_max_images")
    choose_tuning_images(0, max_images=max_images, seed=seed)  # checks it before any work
    chosen = {net: dataclasses.asdict(base) for net in models}
    tables = []
    cases = []
    if grid and io_images:
        cases = _tuning_cases(io_images, points, masks, geometry, patch_size=patch_size,
                              jitter_px=jitter_px, seed=seed, max_images=max_images, log=log)
    if cases:
        from ..crop import keep_centre_component
        from ..models import load_model, predict_segmentation

        patches = np.stack([c["patches"] for c in cases])
        boxes = np.stack([c["boxes"] for c in cases])
        truths = [c["truth"] for c in cases]
        n, k, size = patches.shape[0], patches.shape[1], patches.shape[2]
        print(f"{n} validation images: {', '.join(c['image_id'] for c in cases)}", file=log)
        for net, model_path in models.items():
            probs = predict_segmentation(load_model(model_path), patches.reshape(n * k, size, size))
            net_masks = np.stack([keep_centre_component(p > threshold) for p in probs[..., 1]])
            rows = search_parameters(patches, net_masks.reshape(n, k, size, size), boxes, truths,
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


def levelset_refine(*, patches: StrPath, network_masks: Mapping[str, StrPath],
                    geometry: StrPath, out: StrPath,
                    params: StrPath | Mapping[str, LevelSetParams]) -> dict:
    """Rule ``levelset_refine``: DRLSE on every patch mask of each network, pasted back.

    Each network's patch masks (``masks`` of its inference file) are refined with that
    network's own coefficients and pasted by the rule that pasted the network's masks
    (:func:`lumbar_core.levelset.refine_and_paste`).

    Parameters
    ----------
    patches : path
        The image's crop file (patches and boxes).
    network_masks : dict of str to path
        Network name (``"mnet"``, ``"unet"``) to its inference file for this image.
    geometry : path
        The image's geometry JSON.
    out : path
        Output npz: ``<network>_labels_io`` and ``<network>_labels_input`` per network.
    params : path or dict of str to LevelSetParams
        Coefficients per network name, as chosen by rule ``tune_levelset``: its JSON
        file, or the coefficients themselves.

    Returns
    -------
    dict
        The status record, with ``levelset`` holding each patch's evolution details.

    Raises
    ------
    ValueError
        If ``params`` lacks a network of ``network_masks``.
    """
    if not isinstance(params, Mapping):
        params = {net: LevelSetParams(**p) for net, p in io.read_json(params).items()}
    missing = set(network_masks) - set(params)
    if missing:
        raise ValueError(f"params has no level-set coefficients for {sorted(missing)}")
    crops = io.load_npz(patches)
    status, message = status_of(crops)
    if status != "ok":
        return forward_exclusion(status, message, npz_outputs=[out])
    grid, _ = load_geometry(geometry)
    masks = {net: io.load_npz(path)["masks"].astype(bool) for net, path in network_masks.items()}
    labels, details = refine_and_paste(crops["patches"].astype(np.float32), masks,
                                       crops["boxes"], grid, params=params)
    io.save_npz(out, **labels, **record("ok"))
    return {**record("ok"), "levelset": details}
