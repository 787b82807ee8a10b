"""One function per per-image workflow rule: read the inputs, call the pure functions, write.

The workflow's scripts are thin wrappers around these functions, so each step can be run and
tested without Snakemake. Every per-image output carries a ``status``:

- ``"ok"``;
- ``"excluded"``: the image or its annotation cannot be used (unreadable, truncated, too
  small, no contrast, a level missing...). The message says why. Downstream steps carry
  the status on, so one bad file costs only itself and the cohort completes;
- ``"failed"``: the method ran and failed on the image (fewer than five peaks). The image
  counts against the success rate and in the "all images" column of Table 2;
- ``"implausible"``: five centres were found in an image without annotation but they do
  not form a plausible lumbar spine (:func:`lumbar_core.localize.check_plausibility`).
  Carried on like ``"failed"``: the image gets no masks, heights or grades. In annotated
  images the flag (``plausible: false``) is recorded and the status stays ``"ok"``.

Files are written atomically by :mod:`lumbar_core.io`, so an interrupted job never leaves a
file that looks complete.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from skimage import draw

from . import io
from . import LEVELS
from .crop import crop_boxes, extract_patches, keep_centre_component, paste_masks
from .localize import check_plausibility, select_peaks
from .metrics import METHODS
from .preprocess import Geometry, preprocess_image, resize_image, resize_to_i

__all__ = [
    "run_preprocess",
    "run_ground_truth",
    "run_select_peaks",
    "run_train_patches",
    "run_crop",
    "paste_patch_masks",
    "patch_probabilities_to_masks",
    "whole_probabilities_to_masks",
    "run_levelset",
    "run_metrics",
    "qc_rows",
    "status_of",
]

_U16 = 65535.0


def _record(status: str, message: str = "") -> dict:
    return {"status": status, "message": message}


def status_of(data) -> tuple[str, str]:
    """``(status, message)`` of a loaded per-image npz (dict) or JSON (dict)."""
    status = str(np.asarray(data.get("status", "ok")))
    message = str(np.asarray(data.get("message", "")))
    return status, message


def _stable_seed(seed: int, image_id: str) -> int:
    """A per-image seed that does not depend on the cohort or the job order."""
    return (int(seed) * 1_000_003 + zlib.crc32(image_id.encode())) % 2**32


# --------------------------------------------------------------------------- 2.1


def run_preprocess(image_path, out_io, out_geometry, out_i=None, *, image_id: str,
                   settings: dict, spacing=None) -> dict:
    """Rule ``preprocess``: ``Io`` as uint16 npz, the geometry JSON and ``I``.

    ``I`` (512 x 256, float16, written to ``out_i`` when given) is ``Io`` as stored,
    i.e. after its uint16 rounding, resized: the same array a separate job reading
    ``out_io`` back would make, without a second process and a second decompression
    of the largest file of the workflow. A per-image problem (unreadable, truncated,
    too small, no contrast) is recorded as ``excluded`` with its message in every
    output instead of raised.
    """
    geometry = {"image_id": image_id, "image": str(image_path)}
    try:
        raw, props = io.read_image(image_path)
        image = preprocess_image(raw, **settings)
    except (ValueError, OSError) as err:
        record = _record("excluded", str(err))
        io.save_npz(out_io, io=np.zeros((0, 0), np.uint16), **record)
        io.write_json(out_geometry, {**geometry, **record})
        if out_i is not None:
            io.save_npz(out_i, i=np.zeros((0, 0), np.float16), **record)
        return record
    row_mm = props.get("pixel_spacing_mm")
    if spacing is not None:
        row_mm = (float(spacing), float(spacing))
    geometry.update(
        _record("ok"),
        geometry=Geometry(raw.shape).to_dict(),
        pixel_spacing_mm=list(row_mm) if row_mm is not None else None,
        format=props.get("format"),
        bit_depth=props.get("bit_depth"),
    )
    stored = np.round(image * _U16).astype(np.uint16)
    io.save_npz(out_io, io=stored, **_record("ok"))
    io.write_json(out_geometry, geometry)
    if out_i is not None:
        io.save_npz(out_i, i=resize_to_i(_from_u16(stored)).astype(np.float16), **_record("ok"))
    return _record("ok")


def _from_u16(stored) -> np.ndarray:
    """Stored uint16 ``Io`` as float32 in [0, 1]."""
    return stored.astype(np.float32) / _U16


def load_io(path) -> tuple[np.ndarray | None, dict]:
    """``Io`` as float32 in [0, 1] (None when excluded) and its status record."""
    data = io.load_npz(path)
    status, message = status_of(data)
    if status != "ok":
        return None, _record(status, message)
    return _from_u16(data["io"]), _record("ok")


def load_geometry(path) -> tuple[Geometry | None, dict]:
    """The :class:`Geometry` of an image (None when excluded) and its JSON record."""
    data = io.read_json(path)
    if data.get("status") != "ok":
        return None, data
    return Geometry.from_dict(data["geometry"]), data


def _rasterise(outlines, shape) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.uint8)
    for k, outline in enumerate(outlines):
        rr, cc = draw.polygon(outline[:, 1], outline[:, 0], shape=shape)
        labels[rr, cc] = k + 1
    return labels


def run_ground_truth(annotation_path, geometry_path, out_points, out_masks) -> dict:
    """Rule ``ground_truth``: centres and outlines in input, ``Io`` and ``I`` pixels, masks.

    Masks are the filled 8-point outlines (``skimage.draw.polygon``), labels 1..5 for
    L1..L5, in the input grid, ``Io`` and ``I``. ``l5_height_i`` is L5's mean of its
    anterior and posterior heights in ``I`` pixels (Eq. 4's sigma^2 is a quarter of it).
    """
    geometry, record = load_geometry(geometry_path)
    if geometry is None:
        out = _record("excluded", f"image excluded: {record.get('message', '')}")
        io.write_json(out_points, out)
        io.save_npz(out_masks, **out)
        return out
    try:
        ann = io.read_annotation(annotation_path, image_shape=geometry.input_shape)
    except (ValueError, OSError) as err:
        out = _record("excluded", str(err))
        io.write_json(out_points, out)
        io.save_npz(out_masks, **out)
        return out
    vert = ann["vertebrae"]
    centres = np.array([vert[name]["centre"] for name in LEVELS], dtype=np.float64)
    outlines = np.array([vert[name]["outline"] for name in LEVELS], dtype=np.float64)
    # The spacing of the image (DICOM tag or sample sheet) wins over the annotation's.
    spacing = record.get("pixel_spacing_mm") or ann.get("pixel_spacing_mm")
    out = {**_record("ok"), "levels": list(LEVELS), "anterior": ann.get("anterior"),
           "pixel_spacing_mm": spacing}
    masks = {}
    for space in ("input", "io", "i"):
        c = geometry.input_to(space, centres) if space != "input" else centres
        o = geometry.input_to(space, outlines) if space != "input" else outlines
        out[f"centres_{space}"] = c.tolist()
        out[f"outlines_{space}"] = o.tolist()
        shape = {"input": geometry.input_shape, "io": geometry.io_shape, "i": geometry.i_shape}[space]
        masks[space] = _rasterise(o, shape)
    l5 = np.array(out["outlines_i"][4])
    out["l5_height_i"] = float((np.linalg.norm(l5[0] - l5[6]) + np.linalg.norm(l5[2] - l5[4])) / 2)
    out["genant_grade"] = [vert[name].get("genant_grade") for name in LEVELS]
    out["genant_type"] = [vert[name].get("genant_type") for name in LEVELS]
    io.write_json(out_points, out)
    io.save_npz(out_masks, **masks, status="ok", message="")
    return _record("ok")


# --------------------------------------------------------------------------- 2.2


def run_select_peaks(maps_path, geometry_path, out, *, settings: dict,
                     annotated: bool = False) -> dict:
    """Rule ``select_peaks``: the five centres in ``I``, ``Io`` and input pixels.

    ``settings`` are :func:`select_peaks`'s options and, under ``plausibility``, the
    limits of :func:`check_plausibility`. Five centres that do not form a plausible
    lumbar spine are recorded with ``plausible: false`` and ``implausible_reason``. In
    an ``annotated`` image (an evaluated run) the status stays ``"ok"``, so that the
    paper's success rule and Table 2 judge the detection as they would; otherwise the
    status is ``"implausible"`` and the later steps treat the image like a failed
    detection (no crop, masks, heights or grades), counted separately.
    """
    settings = dict(settings)
    limits = dict(settings.pop("plausibility", None) or {})
    geometry, record = load_geometry(geometry_path)
    maps = io.load_npz(maps_path)
    status, message = status_of(maps)
    if geometry is None or status != "ok":
        result = _record("excluded", message or record.get("message", ""))
        io.write_json(out, result)
        return result
    result = select_peaks(maps["y_l15"].astype(np.float32), **settings)
    if result["status"] != "ok":
        result["message"] = result["status"].removeprefix("failed: ")
        result["status"] = "failed"
    else:
        result["message"] = ""
        centres_i = np.array([result["centres"][name] for name in LEVELS])
        result["centres_i"] = centres_i.tolist()
        result["centres_io"] = geometry.map(centres_i, "i", "io").tolist()
        result["centres_input"] = geometry.to_input("i", centres_i).tolist()
        spacing = geometry.pixel_spacing("io", record.get("pixel_spacing_mm"))
        check = check_plausibility(result["centres_io"], film_box=geometry.film_box("io"),
                                   pixel_spacing_mm=spacing, **limits)
        result["plausible"] = check["plausible"]
        result["implausible_reason"] = check["implausible_reason"]
        result["plausibility"] = check["measures"]
        if not check["plausible"] and not annotated:
            result["status"] = "implausible"
            result["message"] = check["implausible_reason"]
    io.write_json(out, result)
    return result


# --------------------------------------------------------------------------- 2.3


def run_train_patches(io_path, points_path, masks_path, out, *, image_id: str, seed: int,
                      patch_size: int, jitter_px: float, jitter_copies: int) -> dict:
    """Rule ``train_patches``: Eq. 6 patches from GT centres plus random jitter.

    As the paper does, the centres are perturbed with Gaussian noise (std ``jitter_px`` in
    ``Io`` pixels) to mimic test-time localisation error; the boxes follow the perturbed
    centres. The target of each patch is the mask of its centre vertebra only (a decision,
    docs/method.md section 3).
    """
    image, record = load_io(io_path)
    points = io.read_json(points_path)
    if image is None or points.get("status") != "ok":
        io.save_npz(out, **_record("excluded", record["message"] or points.get("message", "")))
        return record
    labels = io.load_npz(masks_path)["io"]
    rng = np.random.default_rng(_stable_seed(seed, image_id))
    centres = np.array(points["centres_io"])
    patches, masks = [], []
    for _ in range(jitter_copies):
        jitter = rng.normal(0.0, jitter_px, size=centres.shape)
        boxes = crop_boxes(centres + jitter)
        patches.append(extract_patches(image, boxes, patch_size=patch_size))
        label_patches = extract_patches(labels, boxes, patch_size=patch_size, order=0)
        masks.append(label_patches == np.arange(1, 6)[:, None, None])
    io.save_npz(out, patches=np.concatenate(patches).astype(np.float16),
                masks=np.concatenate(masks).astype(np.uint8), status="ok", message="")
    return _record("ok")


def run_crop(io_path, peaks_path, out, *, patch_size: int) -> dict:
    """Rule ``crop``: the five Eq. 6 patches around the detected centres, with boxes."""
    peaks = io.read_json(peaks_path)
    if peaks.get("status") != "ok":
        record = _record(peaks.get("status", "excluded"), peaks.get("message", ""))
        io.save_npz(out, **record)
        return record
    image, record = load_io(io_path)
    boxes = crop_boxes(np.array(peaks["centres_io"]))
    io.save_npz(out, patches=extract_patches(image, boxes, patch_size=patch_size).astype(np.float16),
                boxes=boxes, status="ok", message="")
    return _record("ok")


def paste_patch_masks(patch_masks, boxes, geometry: Geometry) -> dict:
    """Binary patch masks pasted back into ``Io`` and the input grid by one rule.

    Every method's patch masks (network or level set) go through here, so that an
    unchanged mask pastes identically whichever method produced it
    (:func:`lumbar_core.crop.paste_masks`).

    Parameters
    ----------
    patch_masks : (5, P, P) bool ndarray
        Mask of the centre vertebra in each patch.
    boxes : (5, 3) ndarray
        Eq. 6 boxes ``(cx, cy, side)`` in ``Io``.
    geometry : Geometry
        The image's geometry; gives both grids and the scale between them.

    Returns
    -------
    dict with ``labels_io`` and ``labels_input``, uint8 label masks 0..5.
    """
    return {
        "labels_io": paste_masks(patch_masks, boxes, geometry.io_shape),
        "labels_input": paste_masks(patch_masks, geometry.paste_boxes(boxes, "input"),
                                    geometry.input_shape, scale=geometry.scale("io", "input")),
    }


def patch_probabilities_to_masks(foreground, boxes, geometry: Geometry, *, threshold=0.5):
    """Centre component of each patch's thresholded prediction, pasted back.

    Parameters
    ----------
    foreground : (5, P, P) ndarray
        Foreground probability of the centre vertebra in each patch.
    boxes : (5, 3) ndarray
        Eq. 6 boxes ``(cx, cy, side)`` in ``Io``.
    geometry : Geometry
        The image's geometry.
    threshold : float, optional
        Probability above which a patch pixel is foreground; default 0.5.

    Returns
    -------
    dict with ``probs`` (the probabilities restricted to the kept components, float16),
    ``masks`` (the kept components, uint8 0/1, the masks the level set refines) and
    ``labels_io``, ``labels_input`` from :func:`paste_patch_masks`.
    """
    masks = np.stack([keep_centre_component(p > threshold) for p in foreground])
    return {"probs": np.where(masks, foreground, 0.0).astype(np.float16),
            "masks": masks.astype(np.uint8), **paste_patch_masks(masks, boxes, geometry)}


def whole_probabilities_to_masks(probs, geometry: Geometry) -> dict:
    """Whole-image class probabilities on ``I`` (H, W, 6) upsampled to ``Io`` and input labels.

    Resampled by the exact mapping of ``geometry`` (padding of ``Io`` and ``I`` included);
    maps on a coarser grid than ``I`` (a network that pools its input) are first resized
    to ``I``, which they cover the whole of.
    """
    probs = np.asarray(probs, dtype=np.float32)
    channels = [probs[..., c] for c in range(probs.shape[-1])]
    if probs.shape[:2] != geometry.i_shape:
        channels = [resize_image(c, geometry.i_shape, order=1) for c in channels]
    out = {}
    for space in ("io", "input"):
        up = np.stack([geometry.resample(c, "i", space, order=1) for c in channels])
        out[f"labels_{space}"] = np.argmax(up, axis=0).astype(np.uint8)
    return out


# --------------------------------------------------------------------------- 2.4


def run_levelset(crop_path, method_paths: dict, geometry_path, out, *, params: dict) -> dict:
    """Rule ``levelset_refine``: DRLSE on every patch mask of each network, pasted back.

    Each network's patch masks (``masks`` of its inference file) are refined with that
    network's own coefficients (:func:`lumbar_core.levelset.refine_patch_masks`: the
    level set, then the centre component) and pasted by :func:`paste_patch_masks`, the
    rule that pasted the network's masks.

    Parameters
    ----------
    crop_path : path
        The image's crop file (patches and boxes).
    method_paths : dict of str to path
        Network name (``"mnet"``, ``"unet"``) to its inference file for this image.
    geometry_path : path
        The image's geometry JSON.
    out : path
        Output npz: ``<method>_labels_io`` and ``<method>_labels_input`` per network.
    params : dict of str to LevelSetParams
        Coefficients per network name, as chosen by rule ``tune_levelset``.

    Returns
    -------
    dict
        The status record, with ``levelset`` holding each patch's evolution details.
    """
    from .levelset import refine_patch_masks

    missing = set(method_paths) - set(params)
    if missing:
        raise ValueError(f"params has no level-set coefficients for {sorted(missing)}")
    crops = io.load_npz(crop_path)
    status, message = status_of(crops)
    if status != "ok":
        io.save_npz(out, status=status, message=message)
        return _record(status, message)
    geometry, _ = load_geometry(geometry_path)
    patches = crops["patches"].astype(np.float32)
    arrays, info = {}, {}
    for method, path in method_paths.items():
        masks = io.load_npz(path)["masks"].astype(bool)
        refined, details = refine_patch_masks(patches, masks, params=params[method])
        info.update({f"{method}_{level}": d for level, d in zip(LEVELS, details)})
        for key, labels in paste_patch_masks(refined, crops["boxes"], geometry).items():
            arrays[f"{method}_{key}"] = labels
    io.save_npz(out, **arrays, status="ok", message="")
    return {**_record("ok"), "levelset": info}


# --------------------------------------------------------------------------- 3.3

#: Table 2's methods in the order the per-image rows list them: baselines first.
_ROW_ORDER = tuple(reversed(METHODS))

#: The predictions ``run_metrics`` reads besides the refined masks: one npz per method.
PREDICTION_SOURCES = tuple(dict.fromkeys(src for src, _, _ in METHODS.values()))


def run_metrics(image_id: str, points_path, masks_path, peaks_path, prediction_paths: dict,
                out_segmentation, out_localization) -> None:
    """Rule ``metrics``: localisation rows (five levels) and region rows (six methods).

    Region metrics are computed in ``Io`` on the union of L1..L5 (``level == "all"``, as
    the paper does) and per level. An image whose detection failed gets, for the two-stage
    methods, the metrics of an empty prediction with status ``"detection failed"``. The
    localisation rows carry ``plausible`` from the detection (empty without one).
    """
    import pandas as pd

    from .metrics import centre_errors, detection_success, label_metrics

    points = io.read_json(points_path)
    peaks = io.read_json(peaks_path)
    if points.get("status") != "ok":
        reason = points.get("message", "")
        io.write_table(out_localization, pd.DataFrame(
            [{"image_id": image_id, "level": lv, "error_px": np.nan, "error_mm": np.nan,
              "success": False, "status": f"excluded: {reason}", "plausible": np.nan}
             for lv in LEVELS]))
        io.write_table(out_segmentation, pd.DataFrame(
            [{"image_id": image_id, "method": m, "level": "all", "status": f"excluded: {reason}"}
             for m in _ROW_ORDER]))
        return
    gt_io = np.array(points["centres_io"])
    detected = peaks.get("status") == "ok"
    if detected:
        pred_io = np.array(peaks["centres_io"])
        errors = centre_errors(pred_io, gt_io)
        spacing = points.get("pixel_spacing_mm")
        if spacing:
            errors_mm = centre_errors(peaks["centres_input"], points["centres_input"],
                                      spacing=spacing)
        else:
            errors_mm = np.full(5, np.nan)
        success = detection_success(pred_io, gt_io)
        status = "ok"
    else:
        errors = errors_mm = np.full(5, np.nan)
        success = False
        status = f"{peaks.get('status')}: {peaks.get('message', '')}"
    # Whether the five centres form a plausible spine (empty when there were no five).
    plausible = peaks.get("plausible", np.nan)
    io.write_table(out_localization, pd.DataFrame(
        {"image_id": image_id, "level": list(LEVELS), "error_px": errors, "error_mm": errors_mm,
         "success": success, "status": status, "plausible": plausible}))
    gt = io.load_npz(masks_path)["io"]
    rows = []
    for method in _ROW_ORDER:
        source, key, two_stage = METHODS[method]
        data = io.load_npz(prediction_paths[source])
        if two_stage and not detected:
            pred, row_status = np.zeros_like(gt), "detection failed"
        else:
            pred, row_status = data[key], "ok"
        for row in label_metrics(gt, pred):
            rows.append({"image_id": image_id, "method": method, "status": row_status, **row})
    io.write_table(out_segmentation, pd.DataFrame(rows))


def qc_rows(geometry_paths, points_paths, peaks_paths) -> list[dict]:
    """Rule ``qc``: one row per image and stage whose status is not ``ok``.

    An implausible detection (:func:`run_select_peaks`) has a row with status
    ``implausible`` and the reason, also in annotated images whose status stays ``ok``.
    """
    rows = []
    for stage, paths in (("preprocess", geometry_paths), ("ground_truth", points_paths),
                         ("select_peaks", peaks_paths)):
        for path in paths:
            data = io.read_json(path)
            if data.get("status") != "ok":
                rows.append({"image_id": Path(path).name.split(".")[0], "stage": stage,
                             "status": data.get("status"), "message": data.get("message", "")})
            elif data.get("plausible") is False:  # annotated: evaluated all the same
                rows.append({"image_id": Path(path).name.split(".")[0], "stage": stage,
                             "status": "implausible",
                             "message": data.get("implausible_reason", "")
                             + " (annotated: still evaluated)"})
    return rows


# --------------------------------------------------------------------------- reporting


def read_rows(paths):
    """Concatenate per-image TSV tables into one DataFrame."""
    import pandas as pd

    frames = [io.read_table(p, dtype={"image_id": str}) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run_tables(segmentation_paths, localization_paths, qc_path, sheet, table1_stem, table2_stem,
               *, n_boot: int = 2000, seed: int = 0) -> None:
    """Rule ``tables``: Table 1 and Table 2 (CSV, Markdown, LaTeX) with strata and CIs.

    Images excluded before evaluation (unreadable file, unusable annotation) are left out
    of both tables; the notes under each table say how many and why.
    """
    import pandas as pd

    from .tables import table1, table2, write_table

    sheet = pd.DataFrame(sheet)
    loc, seg = read_rows(localization_paths), read_rows(segmentation_paths)
    excluded = loc["status"].astype(str).str.startswith("excluded")
    notes = []
    if excluded.any():
        reasons = loc.loc[excluded].groupby("image_id")["status"].first()
        notes.append(f"{reasons.size} image(s) excluded before evaluation: "
                     + "; ".join(f"{i} ({s})" for i, s in reasons.items()))
    qc = io.read_table(qc_path)
    if len(qc):
        notes.append(f"qc.tsv lists {len(qc)} problem(s) across the cohort.")
    excluded_ids = set(loc.loc[excluded, "image_id"])
    loc = loc.loc[~excluded]
    seg = seg.loc[~seg["image_id"].isin(excluded_ids)]
    t1 = table1(loc, sheet, n_boot=n_boot, seed=seed)
    write_table(t1, table1_stem, title="Table 1: centre error (Io pixels) and detection success",
                notes=notes)
    t2 = table2(seg, sheet, n_boot=n_boot, seed=seed)
    write_table(t2, table2_stem, title="Table 2: segmentation of L1-L5 (union, Io space), %",
                notes=notes)


def run_fig9(history_paths, out_stem) -> None:
    """Rule ``fig9``: the loss curves of every trained model."""
    from .plots import plot_loss_curves

    names = {"posenet": "Pose-net", "mnet": "M-net", "unet": "U-net",
             "mnet_whole": "Orig M-net", "unet_whole": "Orig U-net"}
    histories = {names.get(Path(p).name.split(".")[0], Path(p).name): io.read_table(p)
                 for p in history_paths}
    plot_loss_curves(histories, out_stem)


def run_overlays(segmentation_paths, inputs: dict, out_dir, *, n: int) -> list[str]:
    """Rule ``overlays``: input image, GT outlines, centres and each method's outlines.

    With evaluated images (``segmentation_paths`` not empty) the best, worst and median
    images by PN+MNet+LS Dice come first; without ground truth (inference only) the first
    ``n`` images are drawn. ``inputs`` maps each image id to the paths of its ``image``,
    ``peaks``, ``refined`` masks, the per-image npz of ``mnet`` and ``mnet_whole`` and,
    where annotated, its ground truth ``points``. Returns the ids drawn.
    """
    from .plots import plot_overlay
    from .preprocess import normalise_intensity

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dice = {}
    if segmentation_paths:
        seg = read_rows(segmentation_paths)
        ours = seg[(seg["method"] == "PN+MNet+LS") & (seg["level"] == "all")
                   & (seg["status"] == "ok")].sort_values(["dice", "image_id"])
        dice = dict(zip(ours["image_id"], ours["dice"]))
        ids = list(dice)
        ids = [ids[-1], ids[0], ids[len(ids) // 2]] + ids[::-1] if ids else []
    else:
        ids = sorted(inputs)
    chosen = list(dict.fromkeys(ids))[:n]
    for rank, image_id in enumerate(chosen):
        paths = inputs[image_id]
        raw, _ = io.read_image(paths["image"])
        peaks = io.read_json(paths["peaks"])
        refined = io.load_npz(paths["refined"])
        masks = {}
        if status_of(refined)[0] == "ok":
            masks = {"Orig MNet": io.load_npz(paths["mnet_whole"])["labels_input"],
                     "PN+MNet": io.load_npz(paths["mnet"])["labels_input"],
                     "PN+MNet+LS": refined["mnet_labels_input"]}
        points = io.read_json(paths["points"]) if paths.get("points") else {}
        title = image_id + (f": PN+MNet+LS Dice {dice[image_id]:.3f}" if image_id in dice else
                            f": {peaks.get('status')} {peaks.get('message', '')}")
        plot_overlay(normalise_intensity(raw), out_dir / f"{rank:02d}_{image_id}",
                     gt_outlines=points.get("outlines_input"),
                     gt_centres=points.get("centres_input"),
                     pred_centres=peaks.get("centres_input"), pred_masks=masks, title=title)
    return chosen


def run_image_overlay(image_id: str, image_path, peaks_path, geometry_path, refined_path,
                      out_png, *, points_path=None) -> str:
    """Rule ``image_overlay``: one image and what the pipeline found on it, whatever it was.

    Unlike :func:`run_overlays` (a few images chosen by Dice), this draws any image,
    with or without ground truth: the five detected centres with their level names, the
    refined PN+MNet+LS outlines where the image has them and, where the detection found
    no five centres, the candidate peaks that peak selection kept (mapped from ``I`` to
    the input grid). The title is the image id and the ``status`` of ``peaks_path`` with
    its message, as ``select_peaks`` wrote them (``ok``, ``failed``, ``excluded`` or any
    other status). Ground-truth outlines are drawn where ``points_path`` is given. An
    image that cannot be read still gets a (blank) overlay saying why.

    Returns
    -------
    str
        The title drawn.
    """
    import textwrap

    from .plots import plot_overlay
    from .preprocess import normalise_intensity

    peaks = io.read_json(peaks_path)
    status, message = status_of(peaks)
    title = f"{image_id}: {status}" + (f" ({message})" if message else "")
    try:
        raw, _ = io.read_image(image_path)
        image = normalise_intensity(raw)
    except (io.LumbarIOError, OSError) as err:
        image = np.zeros((64, 64))
        title += f"; image not readable: {err}"
    centres = peaks.get("centres_input")
    candidates = None
    geometry, _ = load_geometry(geometry_path)
    if not centres and geometry is not None:
        kept = [[c["x"], c["y"]] for c in peaks.get("candidates", []) if c.get("kept")]
        if kept:
            candidates = geometry.to_input("i", np.array(kept, dtype=np.float64))
    refined = io.load_npz(refined_path)
    masks = {}
    if status_of(refined)[0] == "ok" and np.shape(refined.get("mnet_labels_input")) == image.shape:
        masks["PN+MNet+LS"] = refined["mnet_labels_input"]
    points = io.read_json(points_path) if points_path else {}
    plot_overlay(image, Path(out_png).with_suffix(""), gt_outlines=points.get("outlines_input"),
                 gt_centres=points.get("centres_input"), pred_centres=centres or None,
                 pred_labels=LEVELS[:len(centres)] if centres else None,
                 candidates=candidates, pred_masks=masks,
                 title=textwrap.fill(title, 90), formats=("png",))
    return title


def run_contact_sheet(sheet_path, out_path, *, n: int = 8) -> None:
    """The demo cohort's contact sheet: ``n`` images (every stratum) with GT outlines."""
    from .workflow.cohort import load_sample_sheet
    from .plots import contact_sheet
    from .preprocess import normalise_intensity

    sheet = load_sample_sheet(sheet_path)
    # One image of each split x modality x group first, then the rest in sheet order.
    first = sheet.groupby(["split", "modality", "group"], sort=True).head(1)
    picks = sheet.loc[list(dict.fromkeys(list(first.index) + list(sheet.index)))[:n]]
    images, annotations, titles = [], [], []
    for image_id, row in picks.iterrows():
        raw, _ = io.read_image(row["image"])
        images.append(normalise_intensity(raw))
        annotations.append(io.read_annotation(row["annotation"]))
        titles.append(f"{image_id} ({row['modality']}, {row['group']})")
    contact_sheet(images, annotations, out_path, titles=titles)


# --------------------------------------------------------------------------- beyond the paper


def run_morphometry(image_id: str, refined_path, geometry_path, peaks_path, out, *,
                    points_path=None, masks_path=None) -> None:
    """Rule ``morphometry``: heights and Genant grades of L1..L5 for one image.

    Rows for the pipeline's masks (``source = "PN+MNet+LS"``, in the input grid, with the
    image's pixel spacing) and, where the image is annotated, for the ground-truth masks
    (``"ground truth mask"``, the method's ceiling), each with the annotation's own grade,
    type and outline heights as ``true_*`` columns.
    """
    import pandas as pd

    from .morphometry import heights_from_outline, measure_spine, spine_anterior_direction

    refined = io.load_npz(refined_path)
    status, message = status_of(refined)
    geometry = io.read_json(geometry_path)
    spacing = geometry.get("pixel_spacing_mm")
    frames = []
    if status == "ok":
        # The anterior side from the five detected centres (the lordosis bulges forward),
        # so that an image with fewer than three segmented levels is still measured.
        try:
            anterior = spine_anterior_direction(io.read_json(peaks_path)["centres_input"])
        except ValueError:
            anterior = None
        try:
            frames.append(measure_spine(refined["mnet_labels_input"], spacing_mm=spacing,
                                        anterior=anterior).assign(source="PN+MNet+LS"))
        except ValueError as err:
            status, message = "not measured", str(err)
    if status != "ok":
        frames.append(pd.DataFrame({"level": list(LEVELS), "source": "PN+MNet+LS",
                                    "status": status, "message": message}))
    points = io.read_json(points_path) if points_path else {}
    if points.get("status") == "ok":
        gt = measure_spine(io.load_npz(masks_path)["input"], spacing_mm=spacing,
                           anterior=points.get("anterior"))
        frames.append(gt.assign(source="ground truth mask"))
        truth = pd.DataFrame([heights_from_outline(np.array(o), spacing_mm=spacing)
                              for o in points["outlines_input"]])
        truth = truth.add_prefix("true_").assign(level=list(LEVELS),
                                                 true_grade=points["genant_grade"],
                                                 true_type=points["genant_type"])
        frames = [f.merge(truth, on="level", how="left") for f in frames]
    table = pd.concat(frames, ignore_index=True)
    table.insert(0, "image_id", image_id)
    table["status"] = table["status"].fillna("ok") if "status" in table else "ok"
    table["message"] = table["message"].fillna("") if "message" in table else ""
    io.write_table(out, table)


def run_morphometry_summary(paths, out_rows, out_agreement, out_counts) -> dict:
    """Rule ``morphometry_table``: the cohort's heights, grade counts and agreement.

    Agreement with the annotated grades (confusion matrix, weighted kappa, sensitivity and
    specificity for "any fracture" and "grade >= 2", mean absolute height error) is given
    for the ground-truth masks (the ceiling of the method) and for the pipeline's masks.
    """
    import pandas as pd

    from .morphometry import agreement

    rows = read_rows(paths)
    io.write_table(out_rows, rows)
    counts = (rows.dropna(subset=["grade"]).groupby(["source", "grade"]).size()
              .rename("vertebrae").reset_index()) if "grade" in rows else pd.DataFrame()
    io.write_table(out_counts, counts)
    summary = []
    if "true_grade" in rows:
        for source, group in rows.dropna(subset=["true_grade"]).groupby("source"):
            stats = agreement(group["true_grade"].tolist(), group["grade"].tolist())
            unit = "mm" if group["true_ha_mm"].notna().any() else "px"
            errors = np.concatenate([np.abs(group[f"{h}_{unit}"] - group[f"true_{h}_{unit}"])
                                     for h in ("ha", "hm", "hp")])
            summary.append({"source": source, "n": stats["n"], "n_missing": stats["n_missing"],
                            "kappa_linear": stats["kappa_linear"],
                            "kappa_quadratic": stats["kappa_quadratic"],
                            "sensitivity_any": stats["sensitivity_any"],
                            "specificity_any": stats["specificity_any"],
                            "sensitivity_ge2": stats["sensitivity_ge2"],
                            "specificity_ge2": stats["specificity_ge2"],
                            f"height_mae_{unit}": float(np.nanmean(errors)),
                            "confusion": stats["confusion"].tolist()})
    io.write_table(out_agreement, pd.DataFrame(summary))
    return {"rows": len(rows), "agreement": summary}


def run_fracture_figure(morphometry_path, inputs: dict, out_stem, *, n: int = 6) -> list:
    """Rule ``fracture_figure``: the ``n`` most reduced vertebrae graded >= 1 by the pipeline.

    ``inputs`` maps image ids to ``{"image": path, "refined": path}``. Vertebrae whose
    annotation says fractured come first, so the figure shows what the grading is for.
    """
    import pandas as pd

    from .plots import plot_fracture_examples
    from .preprocess import normalise_intensity

    rows = io.read_table(morphometry_path, dtype={"image_id": str})
    ours = rows[(rows["source"] == "PN+MNet+LS") & (pd.to_numeric(rows.get("grade"),
                                                                   errors="coerce") >= 1)]
    if ours.empty:  # no vertebra graded (e.g. every detection failed): no height columns
        pass
    elif "true_grade" in ours:
        ours = ours.assign(_true=pd.to_numeric(ours["true_grade"], errors="coerce").fillna(0))
        ours = ours.sort_values(["_true", "reduction"], ascending=False)
    else:
        ours = ours.sort_values("reduction", ascending=False)
    examples = []
    for _, row in ours.head(n).iterrows():
        paths = inputs[row["image_id"]]
        raw, _ = io.read_image(paths["image"])
        labels = io.load_npz(paths["refined"])["mnet_labels_input"]
        truth = f", annotated {int(row['true_grade'])} {row['true_type']}" if pd.notna(
            row.get("true_grade")) else ""
        examples.append({"image": normalise_intensity(raw),
                         "mask": labels == LEVELS.index(row["level"]) + 1, "row": row,
                         "title": f"{row['image_id']} {row['level']}: grade {int(row['grade'])} "
                                  f"{row['type']}{truth}"})
    plot_fracture_examples(examples, out_stem)
    return [f"{e['row']['image_id']} {e['row']['level']}" for e in examples]
