"""Synthetic lateral lumbar radiographs with exact ground truth: the demo cohort.

The clinical radiographs of the paper cannot be shipped, so the workflow's demo cohort
is rendered here. A phantom is built the way a radiograph forms:

1. **Anatomy** in a patient frame, in millimetres: ``X`` points to the belly, ``Y`` to
   the feet. The spine is built upwards from the S1 end plate, T9 to L5, with
   textbook sizes (adult vertebral heights, depths and discs), a drawn lumbar lordosis
   and sacral slope; the sacrum, pelvis (iliac wings, crests, femoral heads and
   shafts), the lower ribs, lungs, the torso and bowel gas are placed around it.
   Pathology changes the geometry: compression fractures of a given Genant grade and
   type [1]_, spondylolisthesis of a Meyerding grade [2]_, narrowed discs, end-plate
   sclerosis, osteophytes, low bone density.
2. **Attenuation**: every structure contributes its line integral (chord length times
   density, in millimetres of water equivalent), and the contributions add, so a rib
   over a vertebra is brighter than either. Bodies are elliptic cylinders seen from
   the side: a cortical shell (bright where the beam runs tangentially) around a
   textured trabecular core, with denser end plates. This map is built on a working
   grid of about 0.45 mm, an integer fraction of the output grid.
3. **Detector**: primary intensity ``I0 exp(-mu A)`` with the heel effect, plus a smooth
   scatter haze, a collimator and a lead marker letter; then, at full resolution,
   quantum noise (Poisson-like, relatively stronger in dense regions), the log
   transform (bone bright), the processing of the system (large-scale equalisation,
   a DR or CR tone curve) and quantisation to 16 (DR) or 12 (CR) bits.

Ground truth is exact by construction: the 8-point outline of each vertebral body is
the polygon that is rendered (its end-plate and wall midpoints are set slightly
inwards, which gives the concave end plates), and the same points, mapped through the
same similarity transform that places the patient in the image, are written to the
annotation. The centre is the mean of the four corners.

References
----------
.. [1] H. K. Genant, C. Y. Wu, C. van Kuijk and M. C. Nevitt, "Vertebral fracture
   assessment using a semiquantitative technique", Journal of Bone and Mineral
   Research 8(9), 1137-1148, 1993. :DOI:`10.1002/jbmr.5650080915`
.. [2] H. W. Meyerding, "Spondylolisthesis", Surgery, Gynecology & Obstetrics 54,
   371-377, 1932.
"""

from __future__ import annotations

import math
import numbers
import pathlib
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from scipy import ndimage

__all__ = ["REAL_GEOMETRY", "render_phantom", "write_demo_cohort"]

_LUMBAR = ("L1", "L2", "L3", "L4", "L5")
_LEVELS = ("T9", "T10", "T11", "T12") + _LUMBAR  # top to bottom
_ANNOTATED = ("T12",) + _LUMBAR
_FRACTURE_LEVELS = _ANNOTATED
_MODALITIES = ("DR", "CR")
_GENANT_TYPES = ("wedge", "biconcave", "crush")
# Genant semi-quantitative grades [1]_: height reduction ranges (fractions).
_GENANT_RANGE = {1: (0.20, 0.25), 2: (0.25, 0.40), 3: (0.40, 0.60)}
_GENANT_MARGIN = 0.006
# Adult body sizes in mm (docs/method.md section 8): posterior height, anterior height, depth.
_BODY_MM = {"T9": (21.0, 19.5, 27.0), "T10": (22.0, 20.5, 28.0), "T11": (23.0, 21.5, 29.0),
            "T12": (24.5, 23.0, 30.5), "L1": (27.0, 25.0, 33.0), "L2": (27.5, 26.0, 34.0),
            "L3": (27.5, 27.0, 35.5), "L4": (27.0, 28.0, 36.5), "L5": (26.0, 29.0, 37.5)}
# Mid height (mm) of the disc below each level (the one below L5 is L5-S1).
_DISC_MM = {"T9": 5.0, "T10": 5.5, "T11": 6.0, "T12": 7.0, "L1": 8.0, "L2": 9.0,
            "L3": 10.0, "L4": 11.0, "L5": 10.5}
# Share of the disc part of the lordosis taken by L1-2, ..., L5-S1.
_LORDOSIS_SHARE = {"L1": 0.10, "L2": 0.14, "L3": 0.20, "L4": 0.26, "L5": 0.30}
# Sacral segments S1..S5: posterior height, depth (mm), curvature per segment (deg).
_SACRUM_MM = ((27.0, 40.0), (22.0, 32.0), (18.0, 26.0), (14.0, 19.0), (11.0, 13.0))
_WORK_MM = 0.45  # target size of a working-grid pixel
_OVERRIDES = ("shape", "pixel_spacing_mm", "anterior", "rotation_deg", "lordosis_deg",
              "fractures", "osteoporosis", "spondylolisthesis", "n_gas", "collimation",
              "marker")
_STYLES = ("classic", "film")
# Spine geometry of real lateral lumbar films: BUU-LSPINE lateral set, 100 annotated
# films ("BUU-LSPINE: A Thai Open Lumbar Spine Dataset for Spondylolisthesis
# Detection", Applied Sciences, 2023), measured from the
# end-plate corners in original-image pixels (about 0.14 mm a pixel). Per level:
# (mean, SD, 5th, 95th percentile) of body height h (mean of anterior and posterior
# heights), end-plate width w (mean of both plates), h / w and ha / hp.
REAL_GEOMETRY = {
    "source": "BUU-LSPINE lateral set, 100 annotated films",
    "body_height_px": {"L1": (190, 25, 154, 230), "L2": (194, 26, 156, 231),
                       "L3": (198, 24, 161, 232), "L4": (189, 23, 152, 223),
                       "L5": (185, 22, 150, 217)},
    "plate_width_px": {"L1": (243, 49, 175, 318), "L2": (251, 50, 182, 329),
                       "L3": (255, 50, 184, 333), "L4": (253, 51, 185, 332),
                       "L5": (250, 50, 184, 325)},
    "height_to_width": {"L1": (0.80, 0.09, 0.65, 0.95), "L2": (0.79, 0.10, 0.61, 0.95),
                        "L3": (0.79, 0.09, 0.66, 0.93), "L4": (0.77, 0.11, 0.56, 0.95),
                        "L5": (0.76, 0.12, 0.59, 0.95)},
    "wedge_ha_hp": {"L1": (0.91, 0.08, 0.77, 1.03), "L2": (0.94, 0.12, 0.81, 1.08),
                    "L3": (0.98, 0.09, 0.85, 1.12), "L4": (1.04, 0.10, 0.86, 1.20),
                    "L5": (1.10, 0.10, 0.95, 1.26)},
    # Fractions of the image's mean L1-L5 body height (mean, SD): disc height at the
    # middle of the gap below the level, and the centre distance to the next level.
    "disc_height": {"L1": (0.29, 0.07), "L2": (0.33, 0.07), "L3": (0.36, 0.08),
                    "L4": (0.38, 0.10), "L5": (0.38, 0.11)},
    "centre_spacing": {"L1": (1.28, 0.09), "L2": (1.34, 0.07), "L3": (1.35, 0.10),
                       "L4": (1.34, 0.10)},
    "l1_l5_distance_px": (996, 140, 793, 1194),
    "lordosis_deg": (49.8, 13.0, 24.0, 67.0),  # L1 upper to S1 upper plate; never kyphotic
    "l1_l5_tilt_deg": (6.6, 7.8),  # from the image vertical, positive: L5 anterior of L1
    "s1_slope_deg": (37.0, 10.0),  # S1 upper plate from the image horizontal
    # Box of the 22 corner points (L1 upper .. S1 upper) in image pixels.
    "box_width_px": (477, 106), "box_height_px": (1316, 187),
    "box_top_px": (398, 195), "box_bottom_px": (1714, 296),
    "wedge_share": 0.10,  # spines with some L1-L5 ha / hp < 0.8, mostly L1-L2
    "slip_share": 0.08,  # spines with a forward slip > 10 % of the plate width
    "anterior_left_share": 1.0,
}


# ============================================================================ public API
def render_phantom(seed: int, *, modality: str = "DR", abnormal: bool = False,
                   difficulty: float = 1.0, style: str = "classic",
                   **overrides) -> tuple[np.ndarray, dict, dict]:
    """Render one synthetic lateral lumbar radiograph with its exact annotation.

    Parameters
    ----------
    seed : int
        Non-negative seed; the same seed and options give the same image, bit for bit.
    modality : {"DR", "CR"}, optional
        Detector kind (default ``"DR"``). DR: fine, sharp quantum noise, a mildly
        S-shaped tone curve, 12-, 14- or 16-bit values. CR: coarser noise, a slight
        blur, a film-like (sigmoid) tone curve, 12-bit values.
    abnormal : bool, optional
        Draw an abnormal spine (default False): at least one compression fracture
        (Genant grade 1-3, wedge/biconcave/crush, most often at T12-L2) or a
        spondylolisthesis (L5 on S1 or L4 on L5, Meyerding I-II), often with low bone
        density, narrowed discs, end-plate sclerosis and osteophytes. A normal spine
        has no fracture, no slip and normal density (it may show mild degenerative
        change).
    difficulty : float, optional
        How hard the image is, 0 to 3 (default 1.0, a realistic clinical mix). It
        scales the quantum noise, the scatter, the number of bowel gas shadows, the
        heel effect, the range of whole-image rotation (+-10 degrees at 1) and the
        loss of output contrast; 0 gives a clean, upright, high-contrast image.
    style : {"classic", "film"}, optional
        ``"classic"`` (default): the demo cohort's look, unchanged since it was
        introduced. ``"film"``: as clinical lateral films look (see Notes): the spine
        geometry drawn from :data:`REAL_GEOMETRY`, films of real sizes (2500-3200
        rows, 1:0.95 to 1:1.4 and one in five 1:2, anterior on the left), more
        anatomy and the image formation of clinical films. Mirrored films (anterior
        on the right) are left to training augmentation or the ``anterior``
        override.
    **overrides
        Fix drawn parameters (the rest are still drawn from ``seed``):
        ``shape`` (rows, cols), ``pixel_spacing_mm`` (float), ``anterior``
        ("left"/"right"), ``rotation_deg``, ``lordosis_deg``, ``fractures`` (a list
        of ``{"level": "T12".."L5", "grade": 1-3, "type": "wedge"|"biconcave"|
        "crush"}``, optionally with ``"reduction"``, a fraction inside the grade's
        range, default its middle; no two levels adjacent; replaces the drawn
        fractures, also for a normal spine), ``osteoporosis`` (bool),
        ``spondylolisthesis`` (None or ``{"level": "L4"|"L5", "grade": 1|2}``,
        optionally with ``"slip"``, a fraction of the lower plate's depth),
        ``n_gas`` (int), ``collimation`` ("none", "unexposed", "blank") and
        ``marker`` (bool). Overriding one parameter leaves the others as drawn.

    Returns
    -------
    image : (H, W) uint16 ndarray
        Bone-bright detector values as stored: 0..2**bits - 1, with ``bits`` in
        ``meta["bits_stored"]`` (12 for CR). The caller that stores a CR image as
        DICOM ``MONOCHROME1`` inverts it.
    annotation : dict
        The project's annotation (format ``lumbar-xray-seg/annotation``, version 1)
        in input-pixel coordinates ``(x, y) = (column, row)``: ``image_shape``,
        ``pixel_spacing_mm`` ([row_mm, col_mm]), ``anterior``, and for T12 and L1-L5
        ``centre`` (mean of the four corners), the 8-point ``outline`` (upper
        anterior, upper mid, upper posterior, posterior mid, lower posterior, lower
        mid, lower anterior, anterior mid), ``genant_grade`` and ``genant_type``;
        for S1 ``upper_endplate`` = [anterior corner, posterior corner].
    meta : dict
        The drawn parameters, JSON-serialisable: geometry (shape, spacing, rotation,
        lordosis drawn and measured, sacral slope), the patient (size, torso), the
        pathology (``fractures`` with their measured height reduction,
        ``osteoporosis``, ``spondylolisthesis``, ``disc_narrowing``, ``sclerosis``,
        ``osteophytes``) and the acquisition (photons, scatter, tone curve, bits,
        collimation, marker).

    Raises
    ------
    ValueError
        A bad ``seed``, ``modality``, ``difficulty``, an unknown override or a bad
        override value, or a ``shape`` and ``pixel_spacing_mm`` whose field of view
        cannot hold T12-S1; the message names it.

    Notes
    -----
    Heights follow the annotation's definitions: ``ha = |p0 - p6|``,
    ``hm = |p1 - p5|``, ``hp = |p2 - p4|`` of the outline. A fracture of grade ``g``
    reduces, by a fraction inside the Genant range of ``g`` [1]_ (20-25 %, 25-40 %,
    40-60 %; drawn 0.6 % inside the bounds): ``ha`` relative to ``hp`` (wedge),
    ``hm`` relative to ``hp`` (biconcave: both end plates bowed in), or ``hp``
    relative to the mean ``hp`` of the annotated neighbours (crush: the whole body;
    T12's only annotated neighbour is L1, L5's is L4). Fractured levels are never
    adjacent. Intact bodies stay below 15 % on the wedge and biconcave measures;
    T12, smaller than L1 by anatomy, may have up to about 17 % less posterior height
    than L1. Spondylolisthesis slips the level and everything
    above forward along the end plate below by a fraction of that plate's depth:
    Meyerding I up to 25 %, II 25-50 % [2]_.

    The image is placed so that every annotated point lies at least 4 % of the image
    size inside it (1 % for the film style) and outside the collimator's shadow.

    The film style adds to the classic anatomy: transverse processes (seen end-on over
    the pedicles), facet joint spaces, lateral masses (pedicles and articular processes
    as irregular plates) around dark intervertebral foramina, a second fainter cortical outline of every body
    shifted by 0.6-3 mm (axial rotation or lateral tilt doubling the end plates and
    posterior walls) in 60 % of films, vacuum phenomena in narrowed discs, the psoas,
    and bowel content as mottled texture (gas bubbles in stool) with clusters of
    rounded gas-filled loops over L1 to the pelvis, in front of the spine and over the
    front of the bodies; a thick back behind the spinous processes, a flat
    torso section whose outline shows, the thighs and a large soft pelvic mass over
    L4-S1; a power-law soft-tissue background; normal spines may show age-typical
    degeneration (narrowed discs, sclerotic end plates, osteophytes) but no fracture
    and no slip. Its image formation: bodies only a little brighter than the soft
    tissue, with soft edges and a fine grain at the detector's resolution, the
    posterior elements, pelvis and ribs denser, scatter-to-primary 0.8-2.5, detector
    blur, strong dynamic-range compression, unsharp masking with halos (85 % of films), grid
    lines (all CR, 30 % of DR), blanked collimation borders, a darker film-like tone
    curve and a window over the whole patient. The ground truth is exact as for the
    classic style (the annotated outline is the main rendered outline).

    Examples
    --------
    >>> image, ann, meta = render_phantom(3, shape=(400, 300), pixel_spacing_mm=1.1)
    >>> image.shape, image.dtype, sorted(ann["vertebrae"])
    ((400, 300), dtype('uint16'), ['L1', 'L2', 'L3', 'L4', 'L5', 'S1', 'T12'])
    """
    seed = _check_seed(seed)
    if modality not in _MODALITIES:
        raise ValueError(f"modality must be 'DR' or 'CR'; got {modality!r}")
    if not isinstance(abnormal, (bool, np.bool_)):
        raise ValueError(f"abnormal must be a bool; got {abnormal!r}")
    if (isinstance(difficulty, bool) or not isinstance(difficulty, numbers.Real)
            or not math.isfinite(difficulty) or not 0.0 <= difficulty <= 3.0):
        raise ValueError(f"difficulty must be a number in [0, 3]; got {difficulty!r}")
    if style not in _STYLES:
        raise ValueError(f"style must be 'classic' or 'film'; got {style!r}")
    overrides = _check_overrides(overrides)
    p, anatomy, frame, streams = _spine(seed, modality, bool(abnormal), float(difficulty),
                                        style, overrides)
    look_rng, noise_rng, texture_rng, gas_rng = streams
    render = _render if style == "classic" else _render_film
    image, look = render(p, anatomy, frame, look_rng, noise_rng, texture_rng, gas_rng)
    annotation = _annotation(p, anatomy, frame)
    meta = _meta(seed, p, anatomy, look)
    return image, annotation, meta


def _spine(seed, modality, abnormal, difficulty, style, overrides):
    """Draw the patient and build the anatomy and the frame (no rendering).

    Returns ``(p, anatomy, frame, streams)`` where ``streams`` are the generators left
    for rendering: look, noise, texture and gas.
    """
    # Independent streams, so that overriding one thing (or the image size, which
    # changes how much noise is drawn) leaves the other draws as they were.
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)]
    geo_rng, path_rng, look_rng, noise_rng, texture_rng, gas_rng = streams
    if style == "classic":
        p = _draw_geometry(geo_rng, modality, difficulty)
        p.update(_draw_pathology(path_rng, abnormal))
    else:
        p = _draw_geometry_film(geo_rng, modality, difficulty)
        p.update(_draw_pathology_film(path_rng, abnormal))
    p.update({k: v for k, v in overrides.items() if k in p})
    if "n_gas" in overrides:
        p["n_gas_override"] = overrides["n_gas"]
    for key in ("collimation", "marker"):
        if key in overrides:
            p[key + "_override"] = overrides[key]
    anatomy = _build_anatomy(p)
    if style == "film" and "shape" not in overrides:
        # A film is as large as its patient needs: widen or lengthen it if the spine
        # (T12-S1, drawn from real distributions) would not fit.
        pts = _Frame._annotated_points(anatomy)
        th, sx = math.radians(p["rotation_deg"]), -1.0 if p["anterior"] == "left" else 1.0
        rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
        extent = np.ptp(pts @ (rot @ np.diag([sx, 1.0])).T, axis=0) / p["pixel_spacing_mm"]
        need = (extent + 8) / 0.96 + 40
        p["shape"] = [int(max(p["shape"][0], need[1])), int(max(p["shape"][1], need[0]))]
    frame = _Frame(p, anatomy)
    return p, anatomy, frame, (look_rng, noise_rng, texture_rng, gas_rng)


def write_demo_cohort(out_dir, *, seed: int = 0, n_train: int = 60, n_val: int = 16,
                      n_test_per_stratum: int = 6, difficulty: float = 1.0,
                      style: str = "classic", workers: int = 1) -> pathlib.Path:
    """Write the synthetic demo cohort: images, annotations and the sample sheet.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Output folder; ``images/``, ``annotations/`` and ``samples.tsv`` are written
        into it (created if missing; files of the same names are replaced).
    seed : int, optional
        Cohort seed (default 0). The same seed gives identical bytes.
    n_train, n_val : int, optional
        Sizes of the training (default 60) and validation (default 16) splits; their
        images mix DR and CR, normal and abnormal, about half each.
    n_test_per_stratum : int, optional
        Test images per stratum (default 6); the four strata DR/CR x
        normal/abnormal are balanced.
    difficulty : float, optional
        Passed to :func:`render_phantom` (default 1.0).
    style : {"classic", "film"}, optional
        Passed to :func:`render_phantom` (default ``"classic"``).
    workers : int, optional
        Processes used to render (default 1); the output does not depend on it.

    Returns
    -------
    sheet : pathlib.Path
        ``out_dir/samples.tsv`` with columns ``image_id, image, annotation, split,
        modality, group, pixel_spacing_mm``; paths relative to ``out_dir``.

    Raises
    ------
    ValueError
        A count is negative or not an integer, the cohort is empty, ``seed`` or
        ``workers`` or ``style`` is invalid.

    Notes
    -----
    Image ``k`` of a split is rendered from the seed
    ``SeedSequence(seed, spawn_key=(split, k))`` (split 0 train, 1 val, 2 test), so
    it does not depend on the sizes of the splits. Its modality and group are drawn
    from that sequence for train/val; test image ``k`` has stratum ``k % 4`` (DR
    normal, DR abnormal, CR normal, CR abnormal). Ids ``demo_0001``, ... number the
    images in the order train, val, test.

    DR images are written as 16-bit PNG, one in eight as 16-bit TIFF. CR images are
    DICOM with ``BitsStored`` 12: half ``MONOCHROME2`` (slope 1, intercept 0), half
    ``MONOCHROME1`` with ``RescaleSlope`` 0.25, ``RescaleIntercept`` -1024 and
    ``BitsStored`` 14, stored as ``stored = 16383 - display / 0.25``, so that
    :func:`lumbar_core.io.read_image` (modality LUT, then ``max_possible - value``)
    returns the rendered ``display`` values exactly.
    """
    seed = _check_seed(seed)
    counts = {}
    for name, value in (("n_train", n_train), ("n_val", n_val),
                        ("n_test_per_stratum", n_test_per_stratum)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer; got {value!r}")
        counts[name] = int(value)
    if sum(counts.values()) == 0:
        raise ValueError("the cohort is empty: n_train, n_val and n_test_per_stratum are all 0")
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 1:
        raise ValueError(f"workers must be a positive integer; got {workers!r}")
    if (isinstance(difficulty, bool) or not isinstance(difficulty, numbers.Real)
            or not 0.0 <= difficulty <= 3.0):
        raise ValueError(f"difficulty must be a number in [0, 3]; got {difficulty!r}")
    if style not in _STYLES:
        raise ValueError(f"style must be 'classic' or 'film'; got {style!r}")
    from lumbar_core import io as lio
    from lumbar_core.workflow.cohort import COLUMNS as _SHEET_COLUMNS

    out = pathlib.Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    jobs = []
    sizes = (counts["n_train"], counts["n_val"], 4 * counts["n_test_per_stratum"])
    for split_code, (split, n) in enumerate(zip(("train", "val", "test"), sizes)):
        for k in range(n):
            jobs.append((len(jobs) + 1, split_code, split, k))
    tasks = [(str(out), seed, float(difficulty)) + job + (style,) for job in jobs]
    if workers == 1:
        rows = [_write_one(*task) for task in tasks]
    else:
        with ProcessPoolExecutor(max_workers=int(workers)) as pool:
            rows = list(pool.map(_write_one, *zip(*tasks)))
    import pandas as pd

    sheet = out / "samples.tsv"
    lio.write_table(sheet, pd.DataFrame(rows, columns=list(_SHEET_COLUMNS)))
    return sheet


def _cohort_draw(seed: int, split_code: int, k: int) -> dict:
    """Render seed, modality, group and file format of image ``k`` of a split."""
    render_seq, draw_seq = np.random.SeedSequence(seed, spawn_key=(split_code, k)).spawn(2)
    draw = np.random.default_rng(draw_seq)
    if split_code == 2:  # test: strata DR normal, DR abnormal, CR normal, CR abnormal
        modality, abnormal = ("DR", "DR", "CR", "CR")[k % 4], bool(k % 2)
    else:
        modality, abnormal = ("CR" if draw.random() < 0.5 else "DR"), bool(draw.random() < 0.5)
    return {"seed": int(render_seq.generate_state(1, dtype=np.uint64)[0]),
            "modality": modality, "abnormal": abnormal,
            "tiff": bool(draw.random() < 0.125), "monochrome1": bool(draw.random() < 0.5)}


def _write_one(out_dir, seed, difficulty, number, split_code, split, k, style="classic"):
    """Render and write image ``k`` of a split; returns its sample-sheet row."""
    from lumbar_core import io as lio
    from lumbar_core import phantom_io as pio

    plan = _cohort_draw(seed, split_code, k)
    image, ann, _ = render_phantom(plan["seed"], modality=plan["modality"],
                                   abnormal=plan["abnormal"], difficulty=difficulty,
                                   style=style)
    image_id = f"demo_{number:04d}"
    out = pathlib.Path(out_dir)
    spacing = ann["pixel_spacing_mm"]
    if plan["modality"] == "DR":
        name = f"images/{image_id}." + ("tif" if plan["tiff"] else "png")
        (pio.write_tiff if plan["tiff"] else pio.write_png16)(out / name, image)
    else:
        name = f"images/{image_id}.dcm"
        # MONOCHROME1: read_image computes slope * (2**bits - 1 - stored); see docstring.
        options = ({"photometric": "MONOCHROME1", "rescale_slope": 0.25,
                    "rescale_intercept": -1024.0, "bits_stored": 14} if plan["monochrome1"]
                   else {"photometric": "MONOCHROME2", "rescale_slope": 1.0,
                         "rescale_intercept": 0.0, "bits_stored": 12})
        stored = pio.dicom_stored_values(image, **options)
        pio.write_dicom(out / name, stored, pixel_spacing_mm=spacing, **options)
    annotation = f"annotations/{image_id}.json"
    lio.write_annotation(out / annotation, ann)
    return (image_id, name, annotation, split, plan["modality"],
            "abnormal" if plan["abnormal"] else "normal", f"{spacing[0]:.6g}")


# ============================================================================ validation
def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    return int(seed)


def _check_overrides(overrides: dict) -> dict:
    out = {}
    for key, value in overrides.items():
        if key not in _OVERRIDES:
            raise ValueError(f"unknown override {key!r}; allowed: {', '.join(_OVERRIDES)}")
        if key == "shape":
            if (not isinstance(value, (tuple, list)) or len(value) != 2
                    or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                               and 64 <= v <= 8192 for v in value)):
                raise ValueError(f"shape must be (rows, cols), each 64..8192; got {value!r}")
            value = [int(value[0]), int(value[1])]
        elif key in ("pixel_spacing_mm", "rotation_deg", "lordosis_deg"):
            bounds = {"pixel_spacing_mm": (0.05, 3.0), "rotation_deg": (-45.0, 45.0),
                      "lordosis_deg": (0.0, 90.0)}[key]
            if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                    or not bounds[0] <= value <= bounds[1]):
                raise ValueError(f"{key} must be a number in [{bounds[0]}, {bounds[1]}]; "
                                 f"got {value!r}")
            value = float(value)
        elif key == "anterior":
            if value not in ("left", "right"):
                raise ValueError(f"anterior must be 'left' or 'right'; got {value!r}")
        elif key == "fractures":
            value = _check_fractures(value)
        elif key == "osteoporosis" or key == "marker":
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{key} must be a bool; got {value!r}")
            value = bool(value)
        elif key == "spondylolisthesis":
            if value is not None and (not isinstance(value, dict)
                                      or value.get("level") not in ("L4", "L5")
                                      or value.get("grade") not in (1, 2)):
                raise ValueError(f"spondylolisthesis must be None or {{'level': 'L4'|'L5', "
                                 f"'grade': 1|2}}; got {value!r}")
            if value is not None:
                value = {"level": value["level"], "grade": int(value["grade"]),
                         "slip": float(value.get("slip", 0.15 if value["grade"] == 1 else 0.37))}
                lo, hi = (0.05, 0.25) if value["grade"] == 1 else (0.25, 0.5)
                if not lo <= value["slip"] <= hi:
                    raise ValueError(f"spondylolisthesis slip {value['slip']!r} is outside "
                                     f"Meyerding grade {value['grade']} ({lo}-{hi})")
        elif key == "n_gas":
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"n_gas must be a non-negative integer; got {value!r}")
            value = int(value)
        elif key == "collimation":
            if value not in ("none", "unexposed", "blank"):
                raise ValueError(f"collimation must be 'none', 'unexposed' or 'blank'; "
                                 f"got {value!r}")
        out[key] = value
    return out


def _check_fractures(value) -> list:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"fractures must be a list of dicts; got {value!r}")
    out, seen = [], set()
    for item in value:
        if (not isinstance(item, dict) or item.get("level") not in _FRACTURE_LEVELS
                or item.get("grade") not in (1, 2, 3) or item.get("type") not in _GENANT_TYPES):
            raise ValueError(f"bad fracture {item!r}: expected {{'level': T12..L5, 'grade': 1-3, "
                             f"'type': 'wedge'|'biconcave'|'crush'}}")
        index = _FRACTURE_LEVELS.index(item["level"])
        if index in seen or index - 1 in seen or index + 1 in seen:
            raise ValueError(f"fracture at {item['level']!r} repeats or neighbours another "
                             f"fracture; fractured levels must not be adjacent")
        seen.add(index)
        lo, hi = _GENANT_RANGE[item["grade"]]
        reduction = float(item.get("reduction", (lo + hi) / 2))
        if not lo + _GENANT_MARGIN <= reduction <= hi - _GENANT_MARGIN:
            raise ValueError(f"fracture reduction {reduction!r} is outside Genant grade "
                             f"{item['grade']} ({lo}-{hi})")
        out.append({"level": item["level"], "grade": int(item["grade"]), "type": item["type"],
                    "reduction": reduction})
    return out


# ============================================================================ drawing
def _draw_geometry(rng, modality: str, difficulty: float) -> dict:
    """Acquisition geometry and the normal anatomy of one patient (mm, degrees)."""
    p = {"modality": modality, "difficulty": difficulty}
    rows = int(rng.integers(2300, 3401))
    cols = int(round(rows / rng.uniform(1.05, 1.4)))  # portrait, never 2:1
    spacing = float(np.clip(rng.uniform(330.0, 430.0) / rows, 0.10, 0.20))
    p["shape"] = [rows, cols]
    p["pixel_spacing_mm"] = round(spacing, 5)
    p["anterior"] = "left" if rng.random() < 0.8 else "right"
    p["rotation_deg"] = float(rng.uniform(-10.0, 10.0) * min(difficulty, 1.5))
    p["placement"] = [float(v) for v in rng.random(2)]
    size = float(np.clip(rng.normal(1.0, 0.05), 0.88, 1.12))
    p["size"] = size
    p["lordosis_deg"] = float(rng.uniform(40.0, 60.0))
    p["sacral_slope_deg"] = float(np.clip(p["lordosis_deg"] - 12.0 + rng.normal(0, 3.5),
                                          32.0, 47.0))
    p["pelvic_tilt_deg"] = float(rng.uniform(6.0, 22.0))
    bodies = {}
    for name in _LEVELS:
        hp, ha, depth = _BODY_MM[name]
        jitter = 1.0 + np.clip(rng.normal(0.0, 0.02, 3), -0.05, 0.05)
        bodies[name] = {
            "hp": hp * size * jitter[0],
            "ha": hp * size * jitter[0] * (ha / hp) * jitter[1],  # normal wedging kept
            "depth": depth * size * jitter[2],
            "concave_upper": rng.uniform(0.4, 1.1), "concave_lower": rng.uniform(0.4, 1.1),
            "concave_anterior": rng.uniform(0.3, 1.2), "concave_posterior": rng.uniform(0.1, 0.6),
            "shift": rng.normal(0.0, 0.5) * min(difficulty, 1.5),
            "density": rng.uniform(0.94, 1.06),
        }
    p["bodies"] = bodies
    discs = {}
    for name in _LEVELS:
        height = _DISC_MM[name] * size * (1.0 + rng.normal(0.0, 0.08))
        discs[name] = _thoracic_disc(rng, name, height)
    p["discs"] = discs
    _draw_sacrum_and_density(rng, p, size)
    return p


def _thoracic_disc(rng, name: str, height: float) -> dict:
    """A disc of ``height`` below level ``name``; T9-T12 also get their kyphotic angle."""
    disc = {"height": height}
    if name in ("T9", "T10", "T11"):
        disc["angle_deg"] = -rng.uniform(1.0, 3.5)  # thoracic kyphosis
    elif name == "T12":
        disc["angle_deg"] = rng.uniform(-2.5, 2.0)
    return disc


def _draw_sacrum_and_density(rng, p: dict, size: float) -> None:
    """The last draws of both styles' geometry: sacrum and bone densities, into ``p``."""
    p["sacrum_scale"] = [float(v) for v in size * (1.0 + rng.normal(0.0, 0.04, 5))]
    p["sacral_curve_deg"] = float(rng.uniform(9.0, 16.0))
    # Water-equivalent excess density per mm of path: trabecular core and cortex.
    p["bone_density"] = float(rng.uniform(0.26, 0.36))
    p["cortex_density"] = float(rng.uniform(1.5, 2.1))
    p["texture_gain"] = float(rng.uniform(0.12, 0.2))


def _draw_pathology(rng, abnormal: bool) -> dict:
    """Pathology; all values are drawn for every image and kept only when abnormal."""
    n_fractures = int(rng.choice([0, 1, 2, 3], p=[0.2, 0.55, 0.2, 0.05]))
    weights = np.array([0.24, 0.28, 0.2, 0.12, 0.09, 0.07])  # T12..L5: mostly T12-L2
    fractures, taken = [], set()
    for _ in range(n_fractures):
        allowed = np.array([i not in taken and i - 1 not in taken and i + 1 not in taken
                            for i in range(len(_FRACTURE_LEVELS))], dtype=float)
        if not allowed.any():
            break
        w = weights * allowed
        index = int(rng.choice(len(_FRACTURE_LEVELS), p=w / w.sum()))
        taken.add(index)
        grade = int(rng.choice([1, 2, 3], p=[0.35, 0.42, 0.23]))
        kind = str(rng.choice(_GENANT_TYPES, p=[0.5, 0.3, 0.2]))
        lo, hi = _GENANT_RANGE[grade]
        hi = min(hi, 0.55)
        fractures.append({"level": _FRACTURE_LEVELS[index], "grade": grade, "type": kind,
                          "reduction": float(rng.uniform(lo + _GENANT_MARGIN,
                                                         hi - _GENANT_MARGIN))})
    slip_level = "L5" if rng.random() < 0.7 else "L4"
    slip_grade = 1 if rng.random() < 0.6 else 2
    slip = float(rng.uniform(0.08, 0.25) if slip_grade == 1 else rng.uniform(0.26, 0.45))
    has_slip = rng.random() < (0.3 if fractures else 1.0)
    osteoporosis = rng.random() < (0.6 if fractures else 0.25)
    narrowing = {}
    for name in ("L3", "L4", "L5"):
        factor = float(rng.uniform(0.3, 0.65))
        if rng.random() < {"L3": 0.2, "L4": 0.4, "L5": 0.45}[name]:
            narrowing[name] = factor
    mild_narrowing = {"L5": float(rng.uniform(0.7, 0.85))} if rng.random() < 0.15 else {}
    sclerosis = float(rng.uniform(1.6, 2.6)) if rng.random() < 0.4 else 1.0
    osteophytes = {name: [float(v) for v in rng.uniform(0.0, 1.0, 4)] for name in _LUMBAR}
    has_osteophytes = rng.random() < 0.5
    mild_osteophytes = rng.random() < 0.15
    if not abnormal:
        return {"abnormal": False, "fractures": [], "spondylolisthesis": None,
                "osteoporosis": False, "disc_narrowing": mild_narrowing, "sclerosis": 1.0,
                "osteophytes": ({k: [0.4 * x for x in v] for k, v in osteophytes.items()}
                                if mild_osteophytes else {})}
    return {"abnormal": True, "fractures": fractures,
            "spondylolisthesis": ({"level": slip_level, "grade": slip_grade, "slip": slip}
                                  if has_slip or not fractures else None),
            "osteoporosis": bool(osteoporosis), "disc_narrowing": narrowing,
            "sclerosis": sclerosis if narrowing else 1.0,
            "osteophytes": osteophytes if has_osteophytes else {}}


def _from_z(z, stats):
    """A value of a skewed (split-normal) distribution with the given mean, 5th and 95th
    percentiles, at the standard-normal draw ``z``."""
    mean, _, p5, p95 = stats
    return mean + z * ((p95 - mean) if z > 0 else (mean - p5)) / 1.645


def _draw_geometry_film(rng, modality: str, difficulty: float) -> dict:
    """Acquisition geometry and the normal anatomy of one patient, from real films.

    Body heights and widths, wedging, discs, lordosis, the tilt of the spine and the
    field of view follow :data:`REAL_GEOMETRY` in image pixels; the pixel spacing
    (0.125-0.155 mm) turns them into millimetres.
    """
    real = REAL_GEOMETRY
    p = {"modality": modality, "difficulty": difficulty, "style": "film"}
    spacing = float(rng.uniform(0.125, 0.155))
    rows = int(rng.integers(2500, 3201))
    ratio = 2.0 if rng.random() < 0.2 else float(rng.uniform(0.95, 1.4))
    p["shape"] = [rows, int(round(rows / ratio))]
    p["pixel_spacing_mm"] = round(spacing, 5)
    p["anterior"] = "left"
    p["rotation_deg"] = float(rng.normal(0.0, 4.0) * min(difficulty, 1.5))
    # Real spines take most of their lordosis at L4-5 and L5-S1.
    p["lordosis_share"] = {"L1": 0.04, "L2": 0.08, "L3": 0.16, "L4": 0.28, "L5": 0.44}
    box_top = float(rng.normal(*real["box_top_px"]))
    p["film_place"] = [box_top, float(rng.uniform(0.40, 0.56))]
    p["placement"] = [0.5, 0.5]
    # Body sizes: a common factor per film (patient size and magnification) and a
    # smaller one per level.
    common = rng.standard_normal()
    shape_common = rng.standard_normal()
    bodies, heights = {}, {}
    for name in _LUMBAR:
        z = 0.92 * common + 0.39 * rng.standard_normal()
        h = _from_z(z, real["body_height_px"][name])
        zr = 0.6 * shape_common + 0.8 * rng.standard_normal()
        hw = float(np.clip(_from_z(zr, real["height_to_width"][name]),
                           real["height_to_width"][name][2], 1.1))
        q = float(np.clip(_from_z(rng.standard_normal(), real["wedge_ha_hp"][name]),
                          0.84, 1.35))
        hp = 2 * h / (1 + q) * spacing
        heights[name] = h * spacing
        bodies[name] = {"hp": hp, "ha": q * hp, "depth": h / hw * spacing}
    mean_h = float(np.mean(list(heights.values())))
    size = float(np.clip(mean_h / 27.0, 0.7, 1.35))
    p["size"] = size
    for name in _LEVELS[:4]:
        hp, ha, depth = _BODY_MM[name]
        jitter = 1.0 + np.clip(rng.normal(0.0, 0.03, 3), -0.07, 0.07)
        bodies[name] = {"hp": hp * size * jitter[0], "ha": ha * size * jitter[1],
                        "depth": depth * size * jitter[2]}
    for name in _LEVELS:
        bodies[name].update({
            "concave_upper": rng.uniform(0.4, 1.1), "concave_lower": rng.uniform(0.4, 1.1),
            "concave_anterior": rng.uniform(0.3, 1.2),
            "concave_posterior": rng.uniform(0.1, 0.6),
            "shift": rng.normal(0.0, 0.5), "density": rng.uniform(0.94, 1.06)})
    p["bodies"] = bodies
    # Mode 53, split-normal sides that give the real mean and percentiles once
    # fractures have taken their share.
    p["lordosis_deg"] = float(np.clip(_from_z(rng.standard_normal(), (53.0, 0, 28.0, 67.0)),
                                      10.0, 80.0))
    # The sacral slope goes with the lordosis (the pelvis sets both).
    p["sacral_slope_deg"] = float(np.clip(0.55 * p["lordosis_deg"] + 12.0
                                          + rng.normal(0.0, 5.0), 15.0, 60.0))
    p["pelvic_tilt_deg"] = float(rng.uniform(6.0, 22.0))
    discs = {}
    for name in _LEVELS:
        if name in _LUMBAR:
            mean, sd = real["disc_height"][name]
            # Measured between plate midpoints, the upper discs come out 0.02 larger.
            mean -= 0.02 if name in ("L1", "L2") else 0.0
            height = float(np.clip(rng.normal(mean, sd), 0.12, 0.7)) * mean_h
        else:
            height = _DISC_MM[name] * size * (1.0 + rng.normal(0.0, 0.08))
        discs[name] = _thoracic_disc(rng, name, height)
    p["discs"] = discs
    _draw_sacrum_and_density(rng, p, size)
    return p


def _draw_pathology_film(rng, abnormal: bool) -> dict:
    """Pathology for the film style: the classic draws, slips beyond 10 % of the plate,
    and age-typical degeneration (narrowed discs, sclerosis, osteophytes, vacuum
    discs) in normal spines too; normal spines have no fracture and no slip."""
    q = _draw_pathology(rng, abnormal)
    slip = q["spondylolisthesis"]
    if slip is not None and slip["grade"] == 1:
        slip["slip"] = 0.11 + (slip["slip"] - 0.08) / 0.17 * 0.13
    for fracture in q["fractures"]:  # real films: most deformities are wedges
        if rng.random() < 0.5:
            fracture["type"] = "wedge"
    degenerate = rng.random() < 0.45
    narrowing = {name: float(rng.uniform(0.7, 0.92)) for name in ("L3", "L4", "L5")
                 if rng.random() < {"L3": 0.25, "L4": 0.5, "L5": 0.5}[name]}
    sclerosis = float(rng.uniform(1.3, 2.2))
    osteophytes = {name: [float(v) * 0.7 for v in rng.uniform(0.0, 1.0, 4)]
                   for name in _LUMBAR}
    vacuum = [name for name in ("L3", "L4", "L5") if rng.random() < 0.35]
    if not q["abnormal"] and degenerate:
        q.update({"disc_narrowing": narrowing, "sclerosis": sclerosis,
                  "osteophytes": osteophytes})
    q["vacuum_discs"] = [name for name in vacuum if name in q["disc_narrowing"]]
    return q


# ============================================================================ anatomy
def _t(tilt: float) -> np.ndarray:
    """Unit vector along an end plate (posterior -> anterior) of tilt ``tilt`` (rad).

    The tilt is positive when the anterior edge is lower (the sacral plateau).
    """
    return np.array([math.cos(tilt), math.sin(tilt)])


def _u(tilt: float) -> np.ndarray:
    """Superior axis of a body whose end plate has tilt ``tilt`` (rad)."""
    return np.array([math.sin(tilt), -math.cos(tilt)])


def _outline(ua, up, lp, la, *, upper, lower, anterior, posterior) -> np.ndarray:
    """8-point outline from 4 corners; midpoints moved inwards by the given mm.

    End-plate midpoints move along the line joining the two end-plate midpoints, wall
    midpoints along the line joining the two wall midpoints, so that
    ``|p1 - p5| = |m_upper - m_lower| - upper - lower`` exactly.
    """
    mu, ml = (ua + up) / 2, (la + lp) / 2
    ma, mp = (ua + la) / 2, (up + lp) / 2
    ev = (ml - mu) / np.linalg.norm(ml - mu)
    eh = (mp - ma) / np.linalg.norm(mp - ma)
    return np.array([ua, mu + upper * ev, up, mp - posterior * eh,
                     lp, ml - lower * ev, la, ma + anterior * eh])


def _build_anatomy(p: dict) -> dict:
    """Outlines (mm, patient frame) of the spine and the placement of the pelvis.

    The spine is built upwards from the S1 end plate (posterior corner at the origin,
    tilt = sacral slope): for each level the disc below (posterior height along the
    lower body's axis, angle), then the body (lower plate, posterior and anterior
    heights). The disc angles of L1-2 .. L5-S1 share the drawn lordosis minus the
    wedging of the bodies, so that the L1-S1 angle equals ``lordosis_deg`` before any
    fracture; fractures then change it, as they do in patients.
    """
    bodies = {k: dict(v) for k, v in p["bodies"].items()}
    fractures = {f["level"]: f for f in p["fractures"]}
    for name in _LUMBAR:
        b = bodies[name]
        b["wedge_rad"] = math.atan((b["ha"] - b["hp"]) / b["depth"])
    wedge_sum = sum(bodies[n]["wedge_rad"] for n in _LUMBAR)
    disc_total = math.radians(p["lordosis_deg"]) - wedge_sum
    discs = {k: dict(v) for k, v in p["discs"].items()}
    for name in _LUMBAR:
        share = p.get("lordosis_share", _LORDOSIS_SHARE)[name]
        discs[name]["angle_deg"] = math.degrees(share * disc_total)
        if name in p["disc_narrowing"]:
            discs[name]["height"] *= p["disc_narrowing"][name]
    # Fractures (Genant): heights of the normal body are the reference.
    for name, fr in fractures.items():
        b, r = bodies[name], fr["reduction"]
        if fr["type"] == "wedge":
            b["ha"] = (1.0 - r) * b["hp"]
        elif fr["type"] == "crush":
            i = _ANNOTATED.index(name)
            neighbours = [_ANNOTATED[j] for j in (i - 1, i + 1) if 0 <= j < len(_ANNOTATED)]
            reference = float(np.mean([bodies[n]["hp"] for n in neighbours]))
            ratio = b["ha"] / b["hp"]
            b["hp"] = (1.0 - r) * reference
            b["ha"] = b["hp"] * ratio
            b["depth"] *= 1.04
        b["fracture"] = fr
    slip = p["spondylolisthesis"]
    ss = math.radians(p["sacral_slope_deg"])
    s1_depth = bodies["L5"]["depth"] * 1.05
    below = {"up": np.zeros(2), "tilt": ss, "depth": s1_depth}
    s1_plate = (np.zeros(2) + s1_depth * _t(ss), np.zeros(2))
    outlines = {}
    for name in reversed(_LEVELS):
        b, disc = bodies[name], discs[name]
        delta = math.radians(disc["angle_deg"])
        beta = below["tilt"] - delta
        dp = max(disc["height"] - 0.5 * b["depth"] * math.tan(delta), 1.2)
        lp = below["up"] + dp * _u(below["tilt"]) + b["shift"] * _t(below["tilt"])
        if slip is not None and slip["level"] == name:
            lp = lp + slip["slip"] * below["depth"] * _t(below["tilt"])
        la = lp + b["depth"] * _t(beta)
        up = lp + b["hp"] * _u(beta)
        ua = la + b["ha"] * _u(beta)
        upper, lower = b["concave_upper"], b["concave_lower"]
        fr = b.get("fracture")
        if fr is not None and fr["type"] == "biconcave":
            span = np.linalg.norm((ua + up) / 2 - (la + lp) / 2)
            sink = span - (1.0 - fr["reduction"]) * b["hp"]
            upper, lower = 0.45 * sink, 0.55 * sink
        outlines[name] = _outline(ua, up, lp, la, upper=upper, lower=lower,
                                  anterior=b["concave_anterior"],
                                  posterior=b["concave_posterior"])
        tilt_up = math.atan2(ua[1] - up[1], ua[0] - up[0])
        below = {"up": up, "tilt": tilt_up, "depth": b["depth"]}
    # Sacrum: S1..S5 downwards from the S1 plate, curving forward (kyphotic).
    sacrum = []
    post, tilt = np.zeros(2), ss
    curve = math.radians(p["sacral_curve_deg"])
    for k, ((hp, depth), scale) in enumerate(zip(_SACRUM_MM, p["sacrum_scale"])):
        hp, depth = hp * scale, (s1_depth if k == 0 else depth * scale)
        ha = hp - depth * math.tan(curve)
        ua, up = post + depth * _t(tilt), post
        lp, la = up - hp * _u(tilt), ua - ha * _u(tilt)
        sacrum.append(_outline(ua, up, lp, la, upper=0.3, lower=0.3, anterior=1.5,
                               posterior=0.2))
        tilt -= curve
        post = lp - 1.5 * _u(tilt)
    mid = (s1_plate[0] + s1_plate[1]) / 2
    pt = math.radians(p["pelvic_tilt_deg"])
    hip = mid + 100.0 * p["size"] * np.array([math.sin(pt), math.cos(pt)])
    l5, s1 = outlines["L5"], s1_plate
    lumbar_lordosis = math.degrees(_plate_tilt(s1[0], s1[1])
                                   - _plate_tilt(outlines["L1"][0], outlines["L1"][2]))
    return {"outlines": outlines, "bodies": bodies, "sacrum": sacrum, "s1_plate": s1_plate,
            "hip": hip, "lordosis_measured_deg": lumbar_lordosis,
            "l45_disc": (outlines["L4"][5] + l5[1]) / 2}


def _plate_tilt(anterior, posterior) -> float:
    return math.atan2(anterior[1] - posterior[1], anterior[0] - posterior[0])


# ============================================================================ frame
class _Frame:
    """Similarity transform patient (mm) -> image (px), and the working grid.

    Image coordinates: ``x = cx + (R(theta) @ [sx * X, Y])_x / s``, where ``sx`` mirrors
    the patient when the belly faces left, ``theta`` is the whole-image rotation and
    ``s`` the pixel spacing. Working-grid pixel ``(i, j)`` has its centre at image
    ``(j f + (f - 1) / 2, i f + (f - 1) / 2)``.
    """

    def __init__(self, p: dict, anatomy: dict):
        self.shape = tuple(p["shape"])
        self.spacing = p["pixel_spacing_mm"]
        self.sx = -1.0 if p["anterior"] == "left" else 1.0
        th = math.radians(p["rotation_deg"])
        self.rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
        self.lin = self.rot @ np.diag([self.sx, 1.0]) / self.spacing  # mm -> px
        self.inv = np.linalg.inv(self.lin)
        self.f = max(1, int(round(_WORK_MM / self.spacing)))
        self.work_shape = (-(-self.shape[0] // self.f), -(-self.shape[1] // self.f))
        self.work_mm = self.f * self.spacing
        self.offset = np.zeros(2)
        pts = self._annotated_points(anatomy)
        rows, cols = self.shape
        q = pts @ self.lin.T
        share = 0.01 if "film_place" in p else 0.04
        margin = np.array([share * cols + 2, share * rows + 2])
        lo = margin - q.min(axis=0)
        hi = np.array([cols - 1, rows - 1]) - margin - q.max(axis=0)
        centre = anatomy["outlines"]["L3"][[0, 2, 4, 6]].mean(axis=0) @ self.lin.T
        prefer_lo = np.array([0.38 * cols, 0.4 * rows]) - centre
        prefer_hi = np.array([0.58 * cols, 0.6 * rows]) - centre
        offset = np.empty(2)
        if "film_place" in p:  # the real films' placement: top of L1 and the centre
            box = np.concatenate([anatomy["outlines"][n] for n in _LUMBAR]
                                 + [np.array(anatomy["s1_plate"])]) @ self.lin.T
            want = np.array([p["film_place"][1] * cols - box[:, 0].mean(),
                             p["film_place"][0] - box[:, 1].min()])
            prefer_lo, prefer_hi = want, want
        for k in range(2):
            a, b = max(lo[k], prefer_lo[k]), min(hi[k], prefer_hi[k])
            if a > b:
                a, b = lo[k], hi[k]
                if "film_place" in p and a <= b:
                    a = b = min(max(want[k], a), b)
            if a > b:
                extent = (q.max(axis=0) - q.min(axis=0))[k] * self.spacing
                raise ValueError(
                    f"the field of view is too small for the spine: shape {list(self.shape)}"
                    f" at pixel_spacing_mm={self.spacing} leaves less than the "
                    f"{extent:.0f} mm (plus margins) that T12-S1 need "
                    f"{'across' if k == 0 else 'down'}")
            offset[k] = a + p["placement"][k] * (b - a)
        self.offset = offset
        img = self.to_image(pts)
        self.annotated_box = (img.min(axis=0), img.max(axis=0))

    @staticmethod
    def _annotated_points(anatomy) -> np.ndarray:
        pts = [anatomy["outlines"][n] for n in _ANNOTATED]
        pts.append(np.array(anatomy["s1_plate"]))
        return np.concatenate(pts)

    def to_image(self, pts) -> np.ndarray:
        """(N, 2) patient mm -> (N, 2) image px (x, y)."""
        return np.asarray(pts, dtype=float) @ self.lin.T + self.offset

    def to_work(self, pts) -> np.ndarray:
        return (self.to_image(pts) - (self.f - 1) / 2) / self.f

    def window(self, lo_mm, hi_mm):
        """Working-grid slices covering the patient-frame box, or None if outside."""
        box = np.array([[lo_mm[0], lo_mm[1]], [hi_mm[0], lo_mm[1]],
                        [lo_mm[0], hi_mm[1]], [hi_mm[0], hi_mm[1]]])
        w = self.to_work(box)
        c0, r0 = np.floor(w.min(axis=0)).astype(int) - 1
        c1, r1 = np.ceil(w.max(axis=0)).astype(int) + 2
        r0, c0 = max(r0, 0), max(c0, 0)
        r1, c1 = min(r1, self.work_shape[0]), min(c1, self.work_shape[1])
        if r0 >= r1 or c0 >= c1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def coords(self, rs: slice, cs: slice):
        """Patient-frame X, Y (mm, float32) of the working pixels in the slices."""
        j = np.arange(cs.start, cs.stop, dtype=np.float64) * self.f + (self.f - 1) / 2
        i = np.arange(rs.start, rs.stop, dtype=np.float64) * self.f + (self.f - 1) / 2
        j, i = j - self.offset[0], i - self.offset[1]
        X = (self.inv[0, 0] * j[None, :] + self.inv[0, 1] * i[:, None]).astype(np.float32)
        Y = (self.inv[1, 0] * j[None, :] + self.inv[1, 1] * i[:, None]).astype(np.float32)
        return X, Y


# ============================================================================ primitives
def _seg_dist(X, Y, a, b):
    """Distance (mm) from points to the segment a-b."""
    ab = b - a
    length2 = float(ab @ ab)
    dx, dy = X - np.float32(a[0]), Y - np.float32(a[1])
    if length2 == 0.0:
        return np.hypot(dx, dy)
    t = np.clip((dx * np.float32(ab[0]) + dy * np.float32(ab[1])) / np.float32(length2), 0, 1)
    return np.hypot(dx - t * np.float32(ab[0]), dy - t * np.float32(ab[1]))


def _polyline_dist(X, Y, pts):
    d = _seg_dist(X, Y, pts[0], pts[1])
    for a, b in zip(pts[1:-1], pts[2:]):
        np.minimum(d, _seg_dist(X, Y, a, b), out=d)
    return d


def _inside(X, Y, poly):
    """Even-odd point-in-polygon test, vectorised over the points."""
    inside = np.zeros(X.shape, dtype=bool)
    n = len(poly)
    for k in range(n):
        (x0, y0), (x1, y1) = poly[k], poly[(k + 1) % n]
        if y0 == y1:
            continue
        cross = (Y >= min(y0, y1)) & (Y < max(y0, y1))
        xs = x0 + (Y - y0) * np.float32((x1 - x0) / (y1 - y0))
        inside ^= cross & (X < xs)
    return inside


def _chord(d1, d2, width):
    """Chord of an ellipse of the given width at a point d1, d2 from its two walls."""
    d1, d2 = np.maximum(d1, 0), np.maximum(d2, 0)
    return np.float32(width) * 2 * np.sqrt(d1 * d2) / np.maximum(d1 + d2, 1e-3)


def _ellipsoid(X, Y, centre, axis, a, b, power=0.5):
    """Normalised chord (0..1) through an ellipsoid with semi-axes a (along axis), b.

    ``power`` 0.5 is the exact chord of an ellipsoid; larger values soften the edge.
    """
    dx, dy = X - np.float32(centre[0]), Y - np.float32(centre[1])
    u = (dx * np.float32(axis[0]) + dy * np.float32(axis[1])) / np.float32(a)
    v = (dy * np.float32(axis[0]) - dx * np.float32(axis[1])) / np.float32(b)
    return np.maximum(1 - u * u - v * v, 0) ** np.float32(power)


class _Canvas:
    """Accumulates water-equivalent line integrals (mm) on the working grid."""

    def __init__(self, frame: _Frame):
        self.frame = frame
        self.we = np.zeros(frame.work_shape, dtype=np.float32)

    def region(self, pts, pad):
        pts = np.asarray(pts, dtype=float)
        win = self.frame.window(pts.min(axis=0) - pad, pts.max(axis=0) + pad)
        if win is None:
            return None
        return win, self.frame.coords(*win)

    def ellipsoid(self, centre, axis, a, b, amp, *, power=0.5):
        axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
        got = self.region([centre], max(a, b))
        if got is not None:
            (rs, cs), (X, Y) = got
            self.we[rs, cs] += np.float32(amp) * _ellipsoid(X, Y, centre, axis, a, b, power)

    def tube(self, pts, radius, amp, *, shell=1.0, marrow=0.3, taper=1.0, fade=0.0):
        """A bone tube along a polyline: cortical shell chord plus ``marrow`` x core chord.

        ``amp`` is the water-equivalent density of the cortex per mm of path; the
        radius shrinks linearly to ``taper`` x ``radius`` and the density to
        ``1 - fade`` of itself at the last point.
        """
        pts = np.asarray(pts, dtype=float)
        got = self.region(pts, radius + 1)
        if got is None:
            return
        (rs, cs), (X, Y) = got
        # Distance to the polyline and the position along it (for the taper).
        best = np.full(X.shape, np.inf, dtype=np.float32)
        along = np.zeros(X.shape, dtype=np.float32)
        lengths = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        start = np.concatenate([[0], np.cumsum(lengths)]) / max(lengths.sum(), 1e-6)
        for k in range(len(pts) - 1):
            a, b = pts[k], pts[k + 1]
            ab = b - a
            dx, dy = X - np.float32(a[0]), Y - np.float32(a[1])
            t = np.clip((dx * ab[0] + dy * ab[1]) / max(ab @ ab, 1e-9), 0, 1).astype(np.float32)
            d = np.hypot(dx - t * np.float32(ab[0]), dy - t * np.float32(ab[1]))
            closer = d < best
            best[closer] = d[closer]
            along[closer] = (start[k] + t * (start[k + 1] - start[k]))[closer]
        r = np.float32(radius) * (1 - (1 - np.float32(taper)) * along)
        outer = np.sqrt(np.maximum(r * r - best * best, 0))
        inner_r = np.maximum(r - np.float32(shell), 0)
        inner = np.sqrt(np.maximum(inner_r * inner_r - best * best, 0))
        value = (outer - inner) + np.float32(marrow) * inner
        value *= np.float32(amp) * (1 - np.float32(fade) * along)
        self.we[rs, cs] += value

    def polygon(self, poly, amp, *, soft=1.0):
        """A plate of uniform thickness with softened edges (mm)."""
        poly = np.asarray(poly, dtype=float)
        got = self.region(poly, soft + 1)
        if got is None:
            return
        (rs, cs), (X, Y) = got
        closed = np.vstack([poly, poly[:1]])
        d = _polyline_dist(X, Y, closed)
        sd = np.where(_inside(X, Y, poly), d, -d)
        self.we[rs, cs] += np.float32(amp) * np.clip(0.5 + sd / np.float32(soft), 0, 1)

    def body(self, outline, *, width, rho_t, rho_c, plate_gain, plate_sigma, texture,
             tex_gain, shell=0.8):
        """A vertebral body: elliptic cylinder seen from the side (exact polygon edge).

        The cortical shell (thickness ``shell``) is the chord through the outer
        ellipse minus the chord through the inner one; the trabecular core has the
        inner chord, with texture; end plates add a dense band. The polygon edge is
        anti-aliased over one working pixel, so the rendered region is the outline.
        """
        o = np.asarray(outline, dtype=float)
        got = self.region(o, 2.0)
        if got is None:
            return
        (rs, cs), (X, Y) = got
        d_up = _polyline_dist(X, Y, o[[0, 1, 2]])
        d_post = _polyline_dist(X, Y, o[[2, 3, 4]])
        d_low = _polyline_dist(X, Y, o[[4, 5, 6]])
        d_ant = _polyline_dist(X, Y, o[[6, 7, 0]])
        d_plate = np.minimum(d_up, d_low)
        d_edge = np.minimum(d_plate, np.minimum(d_ant, d_post))
        sd = np.where(_inside(X, Y, o), d_edge, -d_edge)
        cover = np.clip(0.5 + sd / np.float32(self.frame.work_mm), 0, 1)
        outer = _chord(d_ant, d_post, width)
        core = _chord(d_ant - shell, d_post - shell, width - 2 * shell)
        tex = 1 + np.float32(tex_gain) * texture[rs, cs]
        plate = np.exp(-0.5 * (d_plate / np.float32(plate_sigma)) ** 2) * outer
        value = (np.float32(rho_t) * core * tex + np.float32(rho_c) * (outer - core)
                 + np.float32(rho_c * plate_gain) * plate)
        self.we[rs, cs] += cover * value


# ============================================================================ rendering
def _render(p, anatomy, frame, rng, noise_rng, texture_rng, gas_rng):
    """Attenuation map -> detector -> stored values. Returns (image, look dict)."""
    d = p["difficulty"]
    look = {}
    soft, bone = _Canvas(frame), _Canvas(frame)
    texture = _texture(texture_rng, frame.work_shape, frame.work_mm)
    _add_torso(soft, p, anatomy, rng, look)
    _add_spine(bone, p, anatomy, texture)
    _add_ribs(bone, p, anatomy, rng)
    _add_pelvis(bone, p, anatomy, rng)
    _add_gas(soft, p, anatomy, gas_rng, look)
    # Beam quality: water attenuation and the bone/soft-tissue contrast (lower at high kV).
    look["mu_per_mm"] = float(rng.uniform(0.017, 0.021))
    look["bone_contrast"] = float(rng.uniform(0.8, 1.15) * (1.0 - 0.12 * max(d - 1.0, 0.0)))
    we = soft.we + np.float32(look["bone_contrast"]) * bone.we
    H, W = frame.work_shape
    rows = (np.arange(H, dtype=np.float32) / max(H - 1, 1) - 0.5)[:, None]
    cols = (np.arange(W, dtype=np.float32) / max(W - 1, 1) - 0.5)[None, :]
    heel = float(rng.uniform(0.04, 0.14) * d * rng.choice([-1.0, 1.0]))
    vignette = float(rng.uniform(0.0, 0.15) * min(d, 1.0))
    look["heel"], look["vignette"] = heel, vignette
    i0 = (1 + np.float32(heel) * rows) * (1 - np.float32(vignette) * (rows ** 2 + cols ** 2))
    attenuation = np.float32(look["mu_per_mm"]) * we
    primary = i0 * np.exp(-attenuation)
    half = np.exp(-0.5 * attenuation)
    source = i0 * half * (1 - half)
    blur = _smooth_large(source, 45.0 / frame.work_mm)
    # Reference pixel: the L3 centre on the working grid.
    col, row = np.round(frame.to_work([anatomy["outlines"]["L3"][[0, 2, 4, 6]].mean(0)])[0])
    ref = (int(np.clip(row, 0, H - 1)), int(np.clip(col, 0, W - 1)))
    spr = float(rng.uniform(0.5, 1.6) * min(d, 2.0))
    look["scatter_to_primary"] = spr
    scatter = blur * np.float32(spr * primary[ref] / max(float(blur[ref]), 1e-20))
    total = primary + scatter
    field, blank = _collimation(p, frame, rng, look)
    marker = _marker(p, frame, rng, look)
    total *= 1 - 0.985 * marker
    if p["modality"] == "CR":
        total = ndimage.gaussian_filter(total, 0.3 / frame.work_mm)
    log0 = -np.log(total)
    # System processing: large-scale equalisation (dynamic range compression).
    eq = float(rng.uniform(0.5, 0.85))
    eq_mm = float(rng.uniform(12.0, 30.0))
    look["equalisation"] = {"gain": eq, "sigma_mm": eq_mm}
    low = _smooth_large(log0, eq_mm / frame.work_mm)
    correction = np.float32(eq) * (low - np.float32(np.median(low)))
    t1 = total * np.exp(correction)
    # Quantum noise: photons per full-resolution pixel behind L3, and an electronic floor.
    photons = float(rng.uniform(2500.0, 8000.0) / (0.15 + 0.85 * d)) if d > 0 else 1e9
    if p["modality"] == "CR":
        photons *= 0.45
    look["photons_at_l3"] = photons
    gain = float(total[ref]) / photons
    sigma = np.sqrt(total * np.float32(gain) + np.float32(0.02 * gain * float(total[ref])))
    sigma *= np.exp(correction)
    log_eq = -np.log(t1)
    # Auto-window on the spine region, as the system's histogram analysis would.
    (bx0, by0), (bx1, by1) = frame.annotated_box
    pad_x, pad_y = 0.5 * (bx1 - bx0) + 20 / frame.spacing, 0.1 * (by1 - by0)
    r0, r1 = int(max(by0 - pad_y, 0) // frame.f), int((by1 + pad_y) // frame.f) + 1
    c0, c1 = int(max(bx0 - pad_x, 0) // frame.f), int((bx1 + pad_x) // frame.f) + 1
    keep = ((field[r0:r1, c0:c1] > 0.99) & (marker[r0:r1, c0:c1] < 0.01)
            & (we[r0:r1, c0:c1] > 100.0))  # inside the patient
    roi = log_eq[r0:r1, c0:c1][keep]
    values = roi if roi.size > 100 else log_eq.ravel()
    med, hi = (float(v) for v in np.percentile(values, [50.0, rng.uniform(99.3, 99.95)]))
    lo = med - (hi - med) * rng.uniform(0.5, 1.0)  # the median lands at 33-50 % grey
    # Collimator shadow: unexposed (a uniform bright border, only leakage and a
    # little scatter reach it) or blanked by the system's software (black).
    if blank:
        border_t, border_sigma = math.exp(-lo + 5.0), 0.0
    else:
        border_t = math.exp(-(hi + rng.uniform(-0.15, 0.2) * (hi - lo)))
        border_sigma = math.sqrt(border_t * gain)
    t1 = t1 * field + np.float32(border_t) * (1 - field)
    sigma = sigma * field + np.float32(border_sigma) * (1 - field)
    look["window"] = [lo, hi]
    image = _full_resolution(t1, sigma, frame, noise_rng, p["modality"], lo, hi,
                             _tone_lut(rng, p, look))
    return image, look


def _render_film(p, anatomy, frame, rng, noise_rng, texture_rng, gas_rng):
    """Film style: attenuation map -> detector -> stored values, as clinical films look.

    Against :func:`_render`: more anatomy (transverse processes, facet joints, doubled
    contours, vacuum discs, psoas, mottled bowel content), lower bone contrast and
    more scatter, detector blur, correlated noise, a window over the whole patient,
    unsharp masking (DR and most CR systems) and grid lines. Returns (image, look).
    """
    d = p["difficulty"]
    look = {"style": "film"}
    soft, bone, pelvis = _Canvas(frame), _Canvas(frame), _Canvas(frame)
    # Trabecular texture: fainter than the classic mesh.
    texture = _texture(texture_rng, frame.work_shape, frame.work_mm)
    texture *= np.float32(0.6)
    _add_torso(soft, p, anatomy, rng, look)
    _add_spine(bone, _film_bone(p), anatomy, texture)
    _add_spine_film(bone, soft, p, anatomy, rng, look)
    # Posterior elements: a second busy band behind the bodies, as dense as the bodies
    # in projection (both sides add up): irregular lateral masses around the dark
    # intervertebral foramina, drawn with the denser weight (on a stream of their own,
    # which leaves every other draw of the film as it was).
    _add_lateral_masses(pelvis, p, anatomy, rng.spawn(1)[0], look)
    _add_ribs(pelvis, p, anatomy, rng)
    _add_pelvis(pelvis, p, anatomy, rng, rim=0.5, wing_soft=10.0, femur=0.35)
    _add_pelvic_mass(pelvis, p, anatomy, rng, look)
    # Soft, rounded bone edges (the cortex is seen through the whole width of the body,
    # never exactly edge-on); the half-level contour stays on the annotated outline.
    edge_mm = float(rng.uniform(0.4, 0.8))
    look["bone_edge_mm"] = edge_mm
    bone.we = ndimage.gaussian_filter(bone.we, edge_mm / frame.work_mm)
    # Bowel gas is drawn on its own canvas, then broken up by faeces (lobulated, with
    # stool inside it), as gas in real bowel looks: never clean round holes.
    gas = _Canvas(frame)
    _add_bowel(soft, gas, p, anatomy, gas_rng, look)
    _add_gas(gas, p, anatomy, gas_rng, look)
    soft.we += _lobulate(gas.we, gas_rng, frame.work_mm, look)
    _add_clutter(soft, texture_rng, look)
    look["mu_per_mm"] = float(rng.uniform(0.017, 0.021))
    # Bodies only a little brighter than the soft tissue over them, down to barely
    # brighter (osteoporotic or heavy patients); the pelvis and ribs, crossed over a
    # long path by the beam, stay dense.
    look["bone_contrast"] = float(rng.uniform(0.2, 0.45) * (1.0 - 0.12 * max(d - 1.0, 0.0)))
    look["pelvis_contrast"] = float(rng.uniform(0.7, 1.1))
    we = (soft.we + np.float32(look["bone_contrast"]) * bone.we
          + np.float32(look["pelvis_contrast"]) * pelvis.we)
    H, W = frame.work_shape
    rows = (np.arange(H, dtype=np.float32) / max(H - 1, 1) - 0.5)[:, None]
    cols = (np.arange(W, dtype=np.float32) / max(W - 1, 1) - 0.5)[None, :]
    heel = float(rng.uniform(0.04, 0.14) * d * rng.choice([-1.0, 1.0]))
    vignette = float(rng.uniform(0.0, 0.15) * min(d, 1.0))
    look["heel"], look["vignette"] = heel, vignette
    i0 = (1 + np.float32(heel) * rows) * (1 - np.float32(vignette) * (rows ** 2 + cols ** 2))
    attenuation = np.float32(look["mu_per_mm"]) * we
    primary = i0 * np.exp(-attenuation)
    half = np.exp(-0.5 * attenuation)
    blur = _smooth_large(i0 * half * (1 - half), 45.0 / frame.work_mm)
    col, row = np.round(frame.to_work([anatomy["outlines"]["L3"][[0, 2, 4, 6]].mean(0)])[0])
    ref = (int(np.clip(row, 0, H - 1)), int(np.clip(col, 0, W - 1)))
    # Lateral lumbar views scatter strongly; a grid removes part of it.
    spr = float(rng.uniform(0.8, 2.5) * min(max(d, 0.2), 2.0))
    look["scatter_to_primary"] = spr
    total = primary + blur * np.float32(spr * primary[ref] / max(float(blur[ref]), 1e-20))
    # Collimated borders: most archived films blank them (black).
    kind = str(rng.choice(["none", "unexposed", "blank"], p=[0.35, 0.15, 0.5]))
    field, blank = _collimation({"collimation_override": kind, **p}, frame, rng, look)
    marker = _marker(p, frame, rng, look)
    total *= 1 - 0.985 * marker
    # Detector blur (phosphor spread; wider on CR plates).
    mtf_mm = float(rng.uniform(0.12, 0.32) * (1.6 if p["modality"] == "CR" else 1.0))
    look["detector_blur_mm"] = mtf_mm
    total = ndimage.gaussian_filter(total, mtf_mm / frame.work_mm)
    log0 = -np.log(total)
    # Strong dynamic-range compression: the thickness of the trunk is flattened.
    eq = float(rng.uniform(0.65, 0.85))
    eq_mm = float(rng.uniform(15.0, 35.0))
    # The system finds the patient first: the air around it does not pull the local
    # mean down (no bright halo along the skin).
    inside = we > 100.0
    floor = np.float32(np.percentile(log0[inside], 2.0)) if inside.sum() > 100 else log0.min()
    low = _smooth_large(np.maximum(log0, floor), eq_mm / frame.work_mm)
    correction = np.float32(eq) * (low - np.float32(np.median(low)))
    # Unsharp masking of the system (edge enhancement with halos around bone).
    usm = float(rng.uniform(0.3, 1.0)) if rng.random() < 0.85 else 0.0
    usm_mm = float(rng.uniform(1.5, 5.0))
    look["processing"] = {"equalisation": eq, "equalisation_mm": eq_mm,
                          "unsharp_gain": usm, "unsharp_mm": usm_mm}
    log_eq = log0 - correction
    if usm > 0:
        log_eq += np.float32(usm) * (log_eq - ndimage.gaussian_filter(log_eq,
                                                                      usm_mm / frame.work_mm))
    t1 = np.exp(-log_eq)
    photons = float(rng.uniform(1.1e5, 4.4e5) / (0.15 + 0.85 * d)) if d > 0 else 1e9
    if p["modality"] == "CR":
        photons *= 0.45
    look["photons_at_l3"] = photons
    gain = float(total[ref]) / photons
    sigma = np.sqrt(total * np.float32(gain) + np.float32(0.02 * gain * float(total[ref])))
    sigma *= t1 / total
    # Fine trabecular grain at the detector's resolution, inside bone only: finer than
    # the working grid draws, it rides on the quantum noise's draw (no photon noise).
    grain = float(rng.uniform(0.004, 0.012))
    look["bone_grain"] = grain
    bone_we = (np.float32(look["bone_contrast"]) * bone.we
               + np.float32(look["pelvis_contrast"]) * pelvis.we)
    bone_map = np.clip(bone_we / np.float32(max(float(bone_we[ref]), 1.0)), 0, 1.5)
    sigma = np.sqrt(sigma * sigma + (np.float32(grain) * t1 * bone_map) ** 2)
    # Window over the whole patient, as the system's histogram analysis does.
    keep = (field > 0.99) & (marker < 0.01) & (we > 100.0)
    values = log_eq[keep] if keep.sum() > 100 else log_eq.ravel()
    lo, hi = (float(v) for v in np.percentile(values, [rng.uniform(0.5, 5.0),
                                                       rng.uniform(99.0, 99.9)]))
    # The thin rim of the body outline stays out of the window (it goes dark).
    lo = max(lo, float(np.percentile(values, rng.uniform(4.0, 10.0))))
    lo -= (hi - lo) * rng.uniform(0.0, 0.15)
    hi += (hi - lo) * rng.uniform(0.1, 0.35)  # bone is not burnt out
    if blank:
        border_t, border_sigma = math.exp(-lo + 5.0), 0.0
    else:
        border_t = math.exp(-(hi + rng.uniform(-0.15, 0.2) * (hi - lo)))
        border_sigma = math.sqrt(border_t * gain)
    t1 = t1 * field + np.float32(border_t) * (1 - field)
    sigma = sigma * field + np.float32(border_sigma) * (1 - field)
    look["window"] = [lo, hi]
    lines = None
    if p["modality"] == "CR" or rng.random() < 0.3:  # stationary grid, aliased
        period, amp = float(rng.uniform(2.2, 6.0)), float(rng.uniform(0.002, 0.008))
        lines = np.float32(amp) * np.sin(np.float32(2 * math.pi / period)
                                         * np.arange(frame.shape[1], dtype=np.float32))
        look["grid_lines"] = {"period_px": period, "amplitude": amp}
    # Film-like tone: mid-tones darker than the linear window (soft tissue grey).
    lut = _tone_lut(rng, p, look)
    gamma = float(rng.uniform(1.1, 1.6))
    look["film_gamma"] = gamma
    lut = lut[np.round(np.linspace(0.0, 1.0, len(lut)) ** gamma * (len(lut) - 1)).astype(int)]
    image = _full_resolution(t1, sigma, frame, noise_rng, p["modality"], lo, hi,
                             lut, lines=lines, noise_pitch=None if p["modality"] == "DR" else 2)
    return image, look


def _film_bone(p: dict) -> dict:
    """The film style's bone weights for :func:`_add_spine`: a thinner-looking cortex
    (real bodies show a soft rim, not a bright frame), a fainter trabecular core and
    denser end plates (twice the classic weight, which also draws them 1 mm thick
    instead of 0.6 mm, as :func:`_add_spine` draws plates of weight 0.5 and more), so
    that a body is little brighter than the tissue over it but its end plates show as
    bright lines, as on real films."""
    return {**p, "cortex_density": 0.7 * p["cortex_density"],
            "bone_density": 0.7 * p["bone_density"], "plate_gain": 0.6,
            "fused_sacrum": True}


def _add_spine_film(bone, soft, p, anatomy, rng, look):
    """Transverse processes, facet joints, doubled contours and vacuum discs.

    Axial rotation or lateral tilt of the patient separates the left and right halves
    of each body: a second, fainter cortical outline shifted by 1-3 mm doubles the end
    plates (tilt) or the posterior wall (rotation). The annotated outline stays the
    rendered main one.
    """
    outlines, bodies = anatomy["outlines"], anatomy["bodies"]
    size = p["size"]
    rho_t, rho_c = p["bone_density"], p["cortex_density"]
    if p["osteoporosis"]:
        rho_t, rho_c = rho_t * 0.42, rho_c * 0.9
    doubling = rng.random() < 0.6
    distance, angle = rng.uniform(0.6, 3.0), rng.uniform(0.0, math.pi)
    offset = distance * np.array([math.cos(angle), math.sin(angle)])
    flat = np.zeros(bone.frame.work_shape, np.float32) if doubling else None
    look["doubled_contours_mm"] = [float(v) for v in offset] if doubling else None
    look["vacuum_discs"] = list(p.get("vacuum_discs", []))
    for name in _LEVELS:
        o, b = outlines[name], bodies[name]
        e_t = _unit((o[0] - o[2]) + (o[6] - o[4]))
        e_u = np.array([e_t[1], -e_t[0]])
        hp = float(np.linalg.norm(o[2] - o[4]))
        root = o[2] - 14.0 * size * e_t - 0.35 * hp * e_u
        if name in _LUMBAR:  # transverse processes, seen end-on over the pedicles
            bone.ellipsoid(root, e_t, 11.0 * size, 8.0 * size, 6.0 * rho_t / 0.3)
        joint = o[2] - 24.0 * size * e_t - 1.08 * hp * e_u
        bone.tube([joint - 4.0 * size * e_t + 1.5 * e_u, joint + 3.0 * size * e_t - 1.5 * e_u],
                  0.7, -0.8 * rho_c, shell=0.7)
        if doubling:
            bone.body(o + offset, width=0.35 * 1.3 * b["depth"], rho_t=0.0,
                      rho_c=rho_c * b["density"], plate_gain=0.3, plate_sigma=0.6,
                      texture=flat, tex_gain=0.0)
    for name in p.get("vacuum_discs", []):
        o = outlines[name]
        nxt = (np.array(anatomy["s1_plate"]) if name == "L5"
               else outlines[_LEVELS[_LEVELS.index(name) + 1]][[0, 2]])
        front, back = (o[6] + nxt[0]) / 2, (o[4] + nxt[1]) / 2
        soft.ellipsoid(front + 0.4 * (back - front), back - front,
                       0.3 * float(np.linalg.norm(back - front)), 1.0, -12.0, power=1.0)
    # Psoas: muscle in front of and beside the bodies, a faint band along the spine.
    (_, (ay, ax)) = _spine_lines(anatomy)
    ys = np.linspace(float(outlines["T12"][4][1]), float(anatomy["s1_plate"][0][1]), 8)
    band = np.stack([np.interp(ys, ay, ax) - 10.0 * size, ys], axis=1)
    soft.tube(band, 25.0 * size, float(rng.uniform(0.05, 0.15)), shell=25.0 * size,
              taper=1.6)


# Lateral masses in a body's frame (as :func:`_posterior_elements`: ``a`` in mm x size
# towards the belly from the upper posterior corner, ``v`` in posterior heights upwards).
# Between the pedicles of two levels, the posterior wall and disc in front and the
# articular processes behind, the intervertebral foramen is left bare.
_PEDICLE = ((1.0, -0.12), (-15.0, -0.1), (-17.0, -0.3), (-15.0, -0.52), (1.0, -0.5))
_SUPERIOR_PROCESS = ((-13.0, -0.15), (-15.0, 0.25), (-19.0, 0.42), (-25.0, 0.3),
                     (-26.0, -0.3), (-20.0, -0.5))
_INFERIOR_PROCESS = ((-21.0, -0.45), (-24.0, -0.95), (-27.0, -1.3), (-33.0, -1.2),
                     (-34.0, -0.6), (-28.0, -0.3))


def _add_lateral_masses(canvas, p, anatomy, rng, look):
    """Pedicles and superior and inferior articular processes of both sides, seen from
    the side (T9 to L5): irregular plates (corners moved by up to 2 mm, edges softened
    over 2.5 mm, density mottled in blobs of 3 mm, 0.3-1.3 x) of 30-50 mm of bone, so
    that the posterior band is about as bright as the bodies and each foramen shows as
    a dark keyhole behind the disc, as on real films, not a ladder of round-ended bars."""
    size = p["size"]
    bone_mm = float(rng.uniform(30.0, 50.0))
    look["lateral_mass_mm"] = bone_mm
    amp = bone_mm * 0.35 * p["bone_density"]  # the weight the denser canvas gives bone
    masses = _Canvas(canvas.frame)
    for name in _LEVELS:
        o = anatomy["outlines"][name]
        e_t = _unit((o[0] - o[2]) + (o[6] - o[4]))
        e_u = np.array([e_t[1], -e_t[0]])
        hp = float(np.linalg.norm(o[2] - o[4]))
        for shape in (_PEDICLE, _SUPERIOR_PROCESS, _INFERIOR_PROCESS):
            pts = np.array([o[2] + a * size * e_t + v * hp * e_u for a, v in shape])
            pts += rng.uniform(-2.0, 2.0, pts.shape) * size
            masses.polygon(pts, amp * rng.uniform(0.8, 1.2), soft=2.5)
    mottle = ndimage.gaussian_filter(rng.standard_normal(masses.we.shape, dtype=np.float32),
                                     3.0 / canvas.frame.work_mm)
    mottle /= max(float(mottle.std()), 1e-6)
    canvas.we += masses.we * np.clip(0.8 + 0.3 * mottle, 0.3, 1.3)


def _add_clutter(canvas, rng, look):
    """Anatomical background: fat, fascia and muscle bundles make the soft tissue of
    real films a power-law texture (power falling as 1 / f**2 below 20 mm)
    rather than a smooth slab, with the sharp small detail that gives real films
    their flat power spectrum."""
    shape, work_mm = canvas.frame.work_shape, canvas.frame.work_mm
    fy = np.fft.fftfreq(shape[0], d=work_mm)[:, None]
    fx = np.fft.rfftfreq(shape[1], d=work_mm)[None, :]
    f = np.sqrt(fy * fy + fx * fx, dtype=np.float32)
    band = np.clip(f, 1 / 20.0, None) ** np.float32(-1.0)
    white = rng.standard_normal(shape, dtype=np.float32)
    clutter = np.fft.irfft2(np.fft.rfft2(white) * band, s=shape).astype(np.float32)
    std = float(rng.uniform(0.3, 0.7))
    look["clutter_mm"] = std
    inside = np.clip(canvas.we / np.float32(100.0), 0, 1)
    canvas.we += np.float32(std / max(float(clutter.std()), 1e-9)) * clutter * inside


def _add_pelvic_mass(canvas, p, anatomy, rng, look):
    """The pelvis as real films show it: the iliac wings and the gluteal mass of both
    sides overlap into a large bright zone over L4-S1 and the lower third of the film
    (softer than the drawn iliac crests and femoral heads)."""
    size = p["size"]
    hip = np.asarray(anatomy["hip"], dtype=float)
    s1 = anatomy["sacrum"][0]
    top = float(anatomy["l45_disc"][1]) + rng.uniform(-15.0, 15.0) * size
    centre = np.array([(hip[0] + s1[2][0]) / 2 + rng.uniform(-15.0, 15.0) * size,
                       (top + hip[1] + 80.0 * size) / 2])
    a = rng.uniform(110.0, 150.0) * size
    b = max((hip[1] + 80.0 * size - top) / 2, 60.0 * size)
    amp = float(rng.uniform(15.0, 30.0))
    look["pelvic_mass"] = {"half_width_mm": float(a), "water_mm": amp}
    canvas.ellipsoid(centre, (1.0, 0.0), a, b, amp, power=2.0)


def _gas_scale(difficulty: float) -> float:
    """How much bowel gas a film of this ``difficulty`` holds, relative to difficulty 1:
    the difficulty itself, kept within [0.3, 1.5] (an easy film still has some gas)."""
    return min(max(difficulty, 0.3), 1.5)


def _add_bowel(soft, gas_canvas, p, anatomy, rng, look):
    """Bowel content in front of the spine: mottled stool (small gas bubbles in faeces)
    over L1 to the pelvis on ``soft``, and gas-filled loops (:func:`_add_gas_loops`) on
    ``gas_canvas``."""
    frame = soft.frame
    X, Y = frame.coords(slice(0, frame.work_shape[0]), slice(0, frame.work_shape[1]))
    (_, (ay, ax)) = _spine_lines(anatomy)
    size = p["size"]
    front = X - np.interp(Y, ay, ax).astype(np.float32)
    y0 = float(anatomy["outlines"]["L1"][0][1]) - 20.0 * size
    y1 = float(anatomy["hip"][1]) + 40.0 * size
    reach = float(rng.uniform(90.0, 170.0)) * size
    mask = (np.clip((front + 10.0) / 20.0, 0, 1) * np.clip((reach - front) / 40.0, 0, 1)
            * np.clip((Y - y0) / 40.0, 0, 1) * np.clip((y1 - Y) / 40.0, 0, 1))
    white = rng.standard_normal(frame.work_shape, dtype=np.float32)
    fine = ndimage.gaussian_filter(white, 1.6 / frame.work_mm)
    fine /= max(float(fine.std()), 1e-6)
    coarse = _smooth_large(rng.standard_normal(frame.work_shape, dtype=np.float32),
                           12.0 / frame.work_mm)
    coarse /= max(float(coarse.std()), 1e-6)
    stool = float(rng.uniform(0.5, 1.0))
    gas = float(rng.uniform(0.9, 2.1)) * _gas_scale(p["difficulty"])
    # Bubbles with sharp walls (gas against faeces), not smooth blobs.
    bubbles = np.clip((fine - 0.3) * 3.0, 0, 1) * np.clip(coarse + 0.8, 0, None) * stool
    look["bowel"] = {"stool": stool, "gas_mm": gas, "reach_mm": reach}
    soft.we -= np.float32(gas) * mask * np.minimum(bubbles, 2.5)
    _add_gas_loops(gas_canvas, p, anatomy, rng, look, reach)


def _lobulate(gas, rng, work_mm, look):
    """Break bowel gas up the way faeces do: scale its depth by a mottle of blobs a few
    mm across (0 to 1.4 x), so that gas cells get lobulated, ragged outlines and bright
    flecks of stool inside, and soften it by a little blur (loops overlap in depth)."""
    mottle = ndimage.gaussian_filter(rng.standard_normal(gas.shape, dtype=np.float32),
                                     4.0 / work_mm)
    mottle /= max(float(mottle.std()), 1e-6)
    bias = float(rng.uniform(0.5, 0.9))
    look["gas_mottle_bias"] = bias
    return ndimage.gaussian_filter(gas * np.clip(bias + 0.6 * mottle, 0, 1.4), 1.0 / work_mm)


def _add_gas_loops(soft, p, anatomy, rng, look, reach):
    """Gas-filled bowel loops: clusters of rounded gas cells 10-30 mm across (the colon's
    haustra, small-bowel loops) in front of the spine and over the front of the bodies
    (at most 20 mm, scaled by the patient's size, behind the anterior walls), from a few
    cells to most of the abdomen, each a soft-walled ellipsoid of gas (darkest at its
    centre, as a gas sphere's chord)."""
    (_, (ay, ax)) = _spine_lines(anatomy)
    size, scale = p["size"], _gas_scale(p["difficulty"])
    y0 = float(anatomy["outlines"]["L1"][0][1])
    y1 = float(anatomy["hip"][1])
    n_clusters = int(rng.integers(1, 6))
    counts = []
    for _ in range(n_clusters):
        cy = rng.uniform(y0, y1)
        cx = float(np.interp(cy, ay, ax)) + rng.uniform(-10.0, 0.8 * reach / size) * size
        spread = rng.uniform(15.0, 40.0) * size
        n = int(rng.poisson(rng.uniform(4.0, 30.0) * scale))
        counts.append(n)
        fill = rng.uniform(0.2, 0.6)
        for _ in range(n):
            centre = np.array([cx, cy]) + rng.normal(0.0, spread, 2)
            a = rng.uniform(5.0, 15.0) * size
            # At most 20 mm behind the anterior walls at every row the cell covers: over
            # the front of the bodies only.
            wall = np.interp(centre[1] + np.linspace(-a, a, 17), ay, ax).max()
            centre[0] = max(centre[0], float(wall) + a - 20.0 * size)
            b = a * rng.uniform(0.6, 1.0)
            angle = rng.uniform(0, math.pi)
            soft.ellipsoid(centre, (math.cos(angle), math.sin(angle)), a, b,
                           -2.0 * b * fill * rng.uniform(0.7, 1.0), power=0.5)
    look["gas_loops"] = counts


def _texture(rng, shape, work_mm):
    """Band-pass noise (unit std), slightly elongated along the image rows."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    fine = ndimage.gaussian_filter(noise, (0.8 / work_mm, 0.4 / work_mm))
    coarse = ndimage.gaussian_filter(noise, (2.2 / work_mm, 1.5 / work_mm))
    tex = fine - coarse
    tex /= max(float(tex.std()), 1e-6)
    return tex


def _smooth_large(a, sigma_px):
    """Gaussian blur with a large sigma, computed on a block-averaged grid."""
    k = max(1, int(sigma_px // 4))
    H, W = a.shape
    Hp, Wp = -(-H // k) * k, -(-W // k) * k
    padded = np.pad(a, ((0, Hp - H), (0, Wp - W)), mode="edge")
    small = padded.reshape(Hp // k, k, Wp // k, k).mean(axis=(1, 3))
    small = ndimage.gaussian_filter(small, sigma_px / k, mode="nearest")
    return _upsample(small.astype(np.float32), k, (H, W))


def _upsample(a, f, shape):
    """Linear interpolation from a grid of pitch f (centres j f + (f-1)/2) to pitch 1.

    Returns a new float32 array of ``shape``.
    """
    if f == 1:
        return a[:shape[0], :shape[1]].astype(np.float32, copy=True)

    def taps(n_out, n_in):
        u = (np.arange(n_out) - (f - 1) / 2) / f
        i0 = np.floor(u).astype(np.intp)
        w = (u - i0).astype(np.float32)
        return np.clip(i0, 0, n_in - 1), np.clip(i0 + 1, 0, n_in - 1), w

    r0, r1, wr = taps(shape[0], a.shape[0])
    c0, c1, wc = taps(shape[1], a.shape[1])
    rows = a[r0] * (1 - wr)[:, None]
    rows += a[r1] * wr[:, None]
    out = rows[:, c0]
    out *= 1 - wc
    out += rows[:, c1] * wc
    return out


def _full_resolution(t1, sigma, frame, rng, modality, lo, hi, lut, *, lines=None,
                     noise_pitch=None):
    """Upsample, add quantum noise, log-transform and map through the tone LUT.

    ``noise_pitch`` (film style) draws the noise on a grid that many pixels coarser
    (correlated, as behind a detector's blur); ``lines`` (per column) are added to the
    normalised log values before the tone curve (grid lines).
    """
    shape = frame.shape
    floor = np.float32(float(t1.min()) * 0.2)  # keeps the log finite where noise dips
    intensity = _upsample(t1, frame.f, shape)
    std = _upsample(sigma, frame.f, shape)
    if noise_pitch is not None:
        k = int(noise_pitch)
        coarse = rng.standard_normal((-(-shape[0] // k), -(-shape[1] // k)), dtype=np.float32)
        noise = _upsample(coarse, k, shape)
        w = ((np.arange(k) - (k - 1) / 2) / k) % 1.0
        noise *= np.float32(1 / np.mean(w ** 2 + (1 - w) ** 2))  # std kept by the upsampling
    elif modality == "CR":
        coarse = rng.standard_normal((-(-shape[0] // 2), -(-shape[1] // 2)), dtype=np.float32)
        noise = _upsample(coarse, 2, shape)
        noise *= np.float32(1 / 0.625)  # linear 2x interpolation keeps 0.625 of the std
    else:
        noise = rng.standard_normal(shape, dtype=np.float32)
    noise *= std
    intensity += noise
    np.maximum(intensity, floor, out=intensity)
    value = np.log(intensity)
    value *= np.float32(-1 / (hi - lo))
    value -= np.float32(lo / (hi - lo))
    if lines is not None:
        value += lines[None, :]
    np.clip(value, 0, 1, out=value)
    value *= np.float32(len(lut) - 1)
    value += np.float32(0.5)
    return lut[value.astype(np.uint16)]


def _tone_lut(rng, p, look):
    """Tone curve of the system as a 65536-entry LUT to the stored values."""
    d = p["difficulty"]
    x = np.linspace(0.0, 1.0, 65536)
    if p["modality"] == "DR":
        bits = int(rng.choice([12, 14, 16], p=[0.2, 0.3, 0.5]))
        gamma, s = rng.uniform(0.8, 1.25), rng.uniform(0.5, 2.5)
        y = np.tanh(s * (x ** gamma - 0.5)) / math.tanh(s * 0.5) * 0.5 + 0.5
        look["tone"] = {"kind": "DR", "gamma": float(gamma), "s": float(s)}
    else:
        bits = 12
        s, x0 = rng.uniform(4.0, 8.0), rng.uniform(0.42, 0.58)
        y = 1 / (1 + np.exp(-s * (x - x0)))
        y = (y - y[0]) / (y[-1] - y[0])
        look["tone"] = {"kind": "CR", "slope": float(s), "midpoint": float(x0)}
    top = 2 ** bits - 1
    out_lo = rng.uniform(0.0, 0.12) * min(d, 1.5) * top
    out_hi = top * (1 - rng.uniform(0.0, 0.25) * min(d, 1.5))
    look["bits_stored"] = bits
    look["output_range"] = [float(out_lo), float(out_hi)]
    return np.round(out_lo + y * (out_hi - out_lo)).astype(np.uint16)


def _collimation(p, frame, rng, look):
    """Soft field mask (1 inside) on the working grid, and whether it is blanked."""
    kind = str(rng.choice(["none", "unexposed", "blank"], p=[0.3, 0.4, 0.3]))
    kind = p.get("collimation_override", kind)
    rows, cols = frame.shape
    (bx0, by0), (bx1, by1) = frame.annotated_box
    room = [bx0 - 0.02 * cols, by0 - 0.02 * rows, cols - 1 - bx1 - 0.02 * cols,
            rows - 1 - by1 - 0.02 * rows]
    widths = [float(max(r, 0) * rng.uniform(0.0, 0.7) * (rng.random() < 0.6)) for r in room]
    widths = [min(w, 0.12 * (cols if k % 2 == 0 else rows)) for k, w in enumerate(widths)]
    angle = float(rng.uniform(-1.5, 1.5))
    look["collimation"] = {"kind": kind, "borders_px": widths, "angle_deg": angle}
    H, W = frame.work_shape
    if kind == "none":
        return np.ones((H, W), dtype=np.float32), False
    x = np.arange(W, dtype=np.float32) * frame.f + (frame.f - 1) / 2
    y = np.arange(H, dtype=np.float32) * frame.f + (frame.f - 1) / 2
    cx, cy = cols / 2, rows / 2
    a = math.radians(angle)
    xr = (x[None, :] - cx) * math.cos(a) + (y[:, None] - cy) * math.sin(a) + cx
    yr = -(x[None, :] - cx) * math.sin(a) + (y[:, None] - cy) * math.cos(a) + cy
    f = np.float32(frame.f)
    m = np.ones((H, W), dtype=np.float32)
    for distance in (xr - widths[0], cols - 1 - widths[2] - xr,
                     yr - widths[1], rows - 1 - widths[3] - yr):
        m *= np.clip(distance / f + 0.5, 0, 1)
    return m, kind == "blank"


def _marker(p, frame, rng, look):
    """Lead letter ('L' or 'R') in the corner farthest from the spine: coverage 0..1.

    The film style also writes "LT", "RT", "LT." or "RT." and larger letters (10-22 mm),
    as real films' markers read.
    """
    show = p.get("marker_override", bool(rng.random() < 0.85))
    letter = "L" if rng.random() < 0.5 else "R"
    height_mm = rng.uniform(9.0, 15.0)
    text = letter
    if look.get("style") == "film":  # real films: "L", "RT", "LT." and larger letters
        text = letter + str(rng.choice(["", "T", "T."], p=[0.3, 0.35, 0.35]))
        height_mm = rng.uniform(10.0, 22.0)
    H, W = frame.work_shape
    if not show:
        look["marker"] = None
        return np.zeros((H, W), dtype=np.float32)
    rows, cols = frame.shape
    s = frame.spacing
    (bx0, by0), (bx1, by1) = frame.annotated_box
    h = height_mm / s
    wide = 0.6 * h if text == letter else (0.8 * len(text) - 0.2) * h
    corners = [(0.07 * cols, 0.06 * rows), (0.93 * cols - wide, 0.06 * rows),
               (0.07 * cols, 0.94 * rows - h), (0.93 * cols - wide, 0.94 * rows - h)]
    centre = np.array([(bx0 + bx1) / 2, (by0 + by1) / 2])
    x0, y0 = max(corners, key=lambda c: np.hypot(*(np.array(c) + [0.3 * h, 0.5 * h] - centre)))
    strokes = {"L": [[(0, 0), (0, 1)], [(0, 1), (0.62, 1)]],
               "R": [[(0, 1), (0, 0), (0.38, 0)],
                     [(0.38, 0)] + [(0.38 + 0.25 * math.sin(t), 0.25 - 0.25 * math.cos(t))
                                    for t in np.linspace(0, math.pi, 9)[1:]] + [(0, 0.5)],
                     [(0.22, 0.5), (0.62, 1)]]}[letter]
    if text != letter:  # more characters, 0.8 letter heights apart
        glyphs = {"T": [[(0, 0), (0.62, 0)], [(0.31, 0), (0.31, 1)]],
                  ".": [[(0.05, 0.93), (0.1, 0.93)]]}
        strokes = strokes + [[(x + 0.8 * k, y) for x, y in st]
                             for k, ch in enumerate(text[1:], start=1) for st in glyphs[ch]]
    look["marker"] = {"letter": letter, "x": float(x0), "y": float(y0),
                      "height_mm": float(height_mm)}
    if text != letter:
        look["marker"]["text"] = text
    r0 = max(int(y0 / frame.f) - 2, 0)
    r1 = min(int((y0 + 1.2 * h) / frame.f) + 3, H)
    c0 = max(int(x0 / frame.f) - 2, 0)
    c1 = min(int((x0 + (0.9 * h if text == letter else wide + 0.3 * h)) / frame.f) + 3, W)
    cover = np.zeros((H, W), dtype=np.float32)
    if r0 >= r1 or c0 >= c1:
        return cover
    xs = (np.arange(c0, c1) * frame.f + (frame.f - 1) / 2 - x0) / h
    ys = (np.arange(r0, r1) * frame.f + (frame.f - 1) / 2 - y0) / h
    X = np.broadcast_to(xs[None, :], (r1 - r0, c1 - c0)).astype(np.float32)
    Y = np.broadcast_to(ys[:, None], (r1 - r0, c1 - c0)).astype(np.float32)
    dist = np.min([_polyline_dist(X, Y, np.array(st, dtype=float)) for st in strokes], axis=0)
    half = 0.09  # stroke half-width as a fraction of the letter height
    cover[r0:r1, c0:c1] = np.clip((half - dist) * h / frame.f + 0.5, 0, 1)
    return cover


# ============================================================================ structures
def _spine_lines(anatomy):
    """Interpolators Y -> X of the posterior and anterior walls (patient frame)."""
    names = list(_LEVELS)
    post = [anatomy["outlines"][n][3] for n in names] + [s[3] for s in anatomy["sacrum"]]
    ant = [anatomy["outlines"][n][7] for n in names] + [s[7] for s in anatomy["sacrum"]]
    post, ant = np.array(post), np.array(ant)
    order_p, order_a = np.argsort(post[:, 1]), np.argsort(ant[:, 1])
    return (post[order_p, 1], post[order_p, 0]), (ant[order_a, 1], ant[order_a, 0])


def _add_torso(canvas, p, anatomy, rng, look):
    """Soft tissue (elliptic torso section), the lung bases and the buttocks.

    The film style draws the real films' thick back (paraspinal muscles and skin, about
    a quarter of the film behind the spinous processes), a flatter torso section whose
    outline shows at the film's edges, and the thighs and buttocks filling the lower
    part of the film.
    """
    size = p["size"]
    frame = canvas.frame
    win = (slice(0, frame.work_shape[0]), slice(0, frame.work_shape[1]))
    X, Y = frame.coords(*win)
    (py, px), _ = _spine_lines(anatomy)
    back_gap = rng.uniform(70.0, 105.0) * size
    depth = rng.uniform(200.0, 320.0) * size
    width = rng.uniform(280.0, 380.0) * size
    belly = rng.uniform(0.0, 50.0) * size
    buttock = rng.uniform(15.0, 55.0) * size
    y_recess = float(anatomy["outlines"]["T12"][4][1]) + rng.uniform(-5.0, 25.0) * size
    lung_air = rng.uniform(25.0, 70.0)
    film = look.get("style") == "film"
    thigh, flat = 0.0, 2.0
    if film:  # drawn after the classic draws, so that the classic look is unchanged
        back_gap = rng.uniform(115.0, 155.0) * size
        depth = rng.uniform(240.0, 340.0) * size
        thigh = rng.uniform(40.0, 110.0) * size
        flat = rng.uniform(3.0, 5.0)
    y_s1 = float(anatomy["s1_plate"][1][1])
    look["torso"] = {"depth_mm": float(depth), "width_mm": float(width),
                     "back_gap_mm": float(back_gap)}
    x_back = np.interp(Y, py, px).astype(np.float32) - np.float32(back_gap)
    below = np.clip((Y - np.float32(y_s1)) / np.float32(90.0), 0, 1)
    x_back -= np.float32(buttock) * below * below * (3 - 2 * below)
    y_l3 = float(anatomy["outlines"]["L3"][:, 1].mean())
    bulge = np.exp(-0.5 * ((Y - np.float32(y_l3 + 40)) / np.float32(120.0)) ** 2)
    half = np.float32(depth / 2) + np.float32(belly / 2) * bulge
    if film:
        half = half + np.float32(thigh) * below * below * (3 - 2 * below)
    xc = x_back + half
    r = (X - xc) / half
    lateral = np.float32(width) * (1 + np.float32(0.12) * below)
    if film:  # a flatter section: back and belly thick up to the skin
        edge = np.clip(1 - np.abs(r) ** np.float32(flat), 0, 1)
        tissue = lateral * edge ** np.float32(1 / flat)
    else:
        tissue = lateral * np.sqrt(np.clip(1 - r * r, 0, 1))
    # Lung bases: air above the diaphragm, lowest in the posterior recess.
    x_recess = np.interp(y_recess, py, px) - 25.0 * size
    dome = np.float32(y_recess) - np.float32(0.004) * (X - np.float32(x_recess)) ** 2 / size
    dome = np.minimum(dome, np.float32(y_recess))
    ramp = np.clip((dome - Y) / np.float32(70.0), 0, 1)
    lung = np.float32(lung_air) * ramp * np.clip(1 - r * r, 0, 1)
    look["lung_air_mm"] = float(lung_air)
    canvas.we += np.maximum(tissue - lung, 0)


def _add_spine(canvas, p, anatomy, texture):
    """Vertebral bodies, posterior elements, osteophytes and the sacrum.

    ``p["plate_gain"]`` (optional, default 0.3) weighs the end plates against the cortex;
    sclerosis multiplies it, and plates of weight 0.5 and more are drawn 1 mm thick.
    """
    outlines, bodies = anatomy["outlines"], anatomy["bodies"]
    porosis = p["osteoporosis"]
    # Low bone density: faint trabecular core, cortex kept ("picture frame").
    rho_t = p["bone_density"] * (0.42 if porosis else 1.0)
    rho_c = p["cortex_density"] * (0.9 if porosis else 1.0)
    tex_gain = p["texture_gain"] * (1.6 if porosis else 1.0)
    fractures = {f["level"]: f for f in p["fractures"]}
    narrowed = p["disc_narrowing"]
    for idx, name in enumerate(_LEVELS):
        o, b = outlines[name], bodies[name]
        dens = b["density"]
        gain = p.get("plate_gain", 0.3)
        touches = {name, _LEVELS[idx + 1] if idx + 1 < len(_LEVELS) else None}
        # Disc below a body is named after it; the body above a narrowed disc also
        # gets the sclerosis at its lower plate (both plates share the factor).
        if p["sclerosis"] > 1.0 and (touches & set(narrowed) or
                                     (idx > 0 and _LEVELS[idx - 1] in narrowed)):
            gain *= p["sclerosis"]
        fr = fractures.get(name)
        core = rho_t * dens * (1.0 + 0.8 * fr["reduction"] if fr else 1.0)
        canvas.body(o, width=1.3 * b["depth"], rho_t=core, rho_c=rho_c * dens,
                    plate_gain=gain, plate_sigma=0.6 if gain < 0.5 else 1.0,
                    texture=texture, tex_gain=tex_gain)
        _posterior_elements(canvas, o, name, p["size"], rho_t, rho_c)
        if name in p["osteophytes"]:
            _osteophytes(canvas, o, p["osteophytes"][name], rho_c)
    # Sacrum: fused segments; their lateral masses and the alae overlap in projection.
    sacrum = anatomy["sacrum"]
    fused = bool(p.get("fused_sacrum"))
    for k, o in enumerate(sacrum[:1] if fused else sacrum):
        depth = np.linalg.norm(o[0] - o[2])
        canvas.body(o, width=1.5 * depth, rho_t=rho_t * 0.9, rho_c=rho_c * 0.7,
                    plate_gain=0.2 if k else 0.3, plate_sigma=0.8, texture=texture,
                    tex_gain=tex_gain)
    if fused:
        _fused_sacrum(canvas, sacrum, rho_t, rho_c)
    size = p["size"]
    back = [o[3] - 14.0 * size * _unit(o[0] - o[2]) for o in sacrum]
    canvas.tube(np.array(back), 7.0 * size, rho_c * 0.8, shell=1.2, marrow=0.25, taper=0.4)
    s1 = sacrum[0]
    canvas.ellipsoid((s1[1] + s1[5]) / 2 - 6.0 * size * _unit(s1[0] - s1[2]), s1[0] - s1[2],
                     30.0 * size, 24.0 * size, rho_t * 30.0, power=1.0)
    _posterior_elements(canvas, s1, "S1", size, rho_t, rho_c)


def _fused_sacrum(canvas, sacrum, rho_t, rho_c):
    """S2-S5 as adult films show them: one fused, tapering bone under S1, not a stack of
    separate bodies. Each segment fills the space from the lower plate of the one above
    to its own (no dark disc between them), with the mean chord of its width and no
    cortical frame or end plates; only the anterior cortex shows, as a thin line down
    the front of the sacrum."""
    for above, o in zip(sacrum[:-1], sacrum[1:]):
        depth = float(np.linalg.norm(o[0] - o[2]))
        canvas.polygon(np.array([above[6], above[4], o[3], o[4], o[5], o[6], o[7]]),
                       rho_t * 0.9 * 1.5 * depth * math.pi / 4, soft=2.0)
    front = np.array([pt for o in sacrum[1:] for pt in (o[0], o[7], o[6])])
    canvas.tube(front, 1.5, rho_c * 0.5, shell=1.0, marrow=0.0, fade=0.6)


def _unit(v):
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def _posterior_elements(canvas, o, name, size, rho_t, rho_c):
    """Pedicles, articular pillar, lamina and spinous process, fainter than the body.

    In a body's frame (origin at its upper posterior corner, ``a`` towards the belly,
    ``v`` upwards, in mm): both pedicles (superimposed) run back from the upper half
    of the posterior wall to the articular pillar (superior and inferior articular
    processes, reaching above and below the body); the lamina and spinous process
    form a thin midline plate behind it, hatchet-shaped in the lumbar spine and
    long and down-pointing in the thoracic spine.
    """
    e_t = _unit((o[0] - o[2]) + (o[6] - o[4]))
    e_u = np.array([e_t[1], -e_t[0]])
    up, hp = o[2], float(np.linalg.norm(o[2] - o[4]))
    dens = rho_t / 0.4

    def at(*pts):
        return np.array([up + a * size * e_t + v * hp * e_u for a, v in pts])

    # Pedicles: two 9 mm wide bony bars, seen from the side.
    canvas.tube(at((2.0, -0.33), (-17.0, -0.36)), 0.2 * hp, 1.2 * rho_c, shell=1.0,
                marrow=0.35 * dens / rho_c * 1.2)
    # Articular pillar (both sides).
    top = 0.25 if name != "S1" else 0.3
    canvas.tube(at((-19.0, top), (-22.0, -0.55), (-25.0, -1.15)), 6.0 * size,
                0.9 * rho_c, shell=1.0, marrow=0.4 * dens, taper=0.8)
    if name == "S1":
        return
    if name.startswith("L"):
        plate = at((-22.0, -0.1), (-56.0, -0.22), (-60.0, -0.45), (-57.0, -0.8),
                   (-26.0, -0.98))
        canvas.polygon(plate, 4.5 * dens, soft=2.5)
        canvas.tube(at((-56.0, -0.22), (-60.0, -0.45), (-57.0, -0.8)), 2.5 * size,
                    0.8 * rho_c, shell=1.0)
    else:
        plate = at((-20.0, -0.15), (-45.0, -0.8), (-60.0, -1.5), (-52.0, -1.6),
                   (-30.0, -1.0), (-22.0, -0.9))
        canvas.polygon(plate, 4.0 * dens, soft=2.5)


def _osteophytes(canvas, o, draws, rho_c):
    """Spurs at the anterior corners, outside the annotated outline."""
    for corner, draw in ((0, draws[0]), (6, draws[1])):
        length = 6.0 * draw
        if length < 1.5:
            continue
        c = o[corner]
        out = _unit(c - (o[2] if corner == 0 else o[4]))
        vertical = _unit((o[0] - o[6]) if corner == 0 else (o[6] - o[0]))
        tip = c + 0.5 * length * out + length * vertical
        spur = [c - 4.0 * vertical + 0.2 * out, c + 1.2 * out, tip, c - 1.5 * out]
        canvas.polygon(spur, 8.0 * rho_c * (0.6 + 0.6 * draws[2]), soft=0.7)


def _add_ribs(canvas, p, anatomy, rng):
    """Ribs 9-12, both sides slightly offset: oblique bands over the upper lumbar spine.

    From the costovertebral joint (behind the upper posterior body) a rib runs back to
    its angle, then down and forwards (a quadratic Bezier curve); the far-side rib is
    magnified a little more.
    """
    size = p["size"]
    reach = {"T9": (150, 110), "T10": (135, 115), "T11": (100, 105), "T12": (55, 80)}
    for name in ("T9", "T10", "T11", "T12"):
        o = anatomy["outlines"][name]
        e_t = _unit(o[0] - o[2])
        e_u = np.array([e_t[1], -e_t[0]])
        head = o[2] - 5.0 * size * e_t - 0.3 * float(np.linalg.norm(o[2] - o[4])) * e_u
        ant, down = reach[name]
        for side in range(2):
            scale = size * (1.0 + 0.07 * side) * rng.uniform(0.85, 1.15)
            shift = rng.uniform(-8.0, 8.0, 2) * size
            back = head + np.array([-rng.uniform(30, 45), rng.uniform(5, 20)]) * scale
            tip = head + np.array([ant * rng.uniform(0.7, 1.1),
                                   down * rng.uniform(0.8, 1.15)]) * scale
            t = np.linspace(0, 1, 14)[:, None]
            curve = (1 - t) ** 2 * head + 2 * t * (1 - t) * back + t ** 2 * tip + shift
            canvas.tube(curve, rng.uniform(4.5, 6.0) * size, rng.uniform(1.2, 1.9),
                        shell=1.0, marrow=0.2, taper=0.55, fade=0.9)


def _add_pelvis(canvas, p, anatomy, rng, *, rim=1.0, wing_soft=3.0, femur=1.0):
    """Both hemipelves, slightly offset and magnified differently (beam divergence).

    The hip axis lies in front of and below the S1 plate at the pelvic tilt angle. Each
    side has an iliac wing (a thin plate) bounded above by the crest, which arches over
    L4-L5 from the anterior superior iliac spine to behind the sacrum; the arcuate line;
    a femoral head (a sphere with its cortex) under the acetabular roof; the greater
    trochanter and femoral shaft going down; the ischium behind and the pubis in front.
    ``rim`` scales the density of the crest, the arcuate line and the acetabular roof (the
    film style draws them fainter, as real films show them through the overlapping
    pelvis); ``wing_soft`` is the width (mm) over which the wing's edge fades in (the film
    style draws the edges of the wing soft, the crest line alone marking its top);
    ``femur`` scales the femoral heads, trochanters and shafts (the film style draws them
    as faint as real films show them under the thick soft tissue of the hips and
    buttocks).
    """
    size = p["size"]
    hip = anatomy["hip"]
    s1 = anatomy["sacrum"][0]
    crest_y = float(anatomy["l45_disc"][1]) + rng.uniform(-10.0, 12.0) * size
    x_mid = float((anatomy["outlines"]["L5"][0][0] + anatomy["outlines"]["L5"][2][0]) / 2)

    def around(centre, radius, start, stop, n):
        angles = np.linspace(start, stop, n)
        return centre + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)

    for side in range(2):
        mag = size * (1.0 + 0.06 * side)
        shift = rng.uniform(-9.0, 9.0, 2) * size
        asis = hip + np.array([rng.uniform(35, 55), -rng.uniform(50, 70)]) * mag
        apex = np.array([x_mid - rng.uniform(0, 25) * size, crest_y]) + shift
        psis = s1[2] + np.array([-rng.uniform(30, 45), rng.uniform(10, 35)]) * size
        ctrl = 2 * apex - (asis + psis) / 2
        t = np.linspace(0, 1, 16)[:, None]
        crest = (1 - t) ** 2 * asis + 2 * t * (1 - t) * ctrl + t ** 2 * psis + shift
        lower = hip + np.array([[-45.0, -15.0], [0.0, -30.0], [35.0, -28.0]]) * mag + shift
        canvas.polygon(np.vstack([crest, lower]), rng.uniform(6.0, 10.0), soft=wing_soft)
        canvas.tube(crest, 4.0 * size, 3.0 * rim, shell=1.3)
        arcuate = np.array([s1[4] + np.array([8.0, 5.0]) * size,
                            hip + np.array([5.0, -32.0]) * size,
                            hip + np.array([40.0, 8.0]) * size]) + shift
        canvas.tube(arcuate, 2.5 * size, 3.0 * rim, shell=1.0)
        head_r = rng.uniform(22.0, 26.0) * mag
        centre = hip + shift * 0.6
        canvas.ellipsoid(centre, (1.0, 0.0), head_r, head_r,
                         2 * head_r * p["bone_density"] * femur)
        canvas.tube(around(centre, head_r, -2.6, -0.3, 10), 3.0 * size, 6.0 * rim, shell=1.5)
        canvas.tube(around(centre, 1.05 * head_r, -3.0, 0.2, 16), 1.2 * size, 4.0 * femur,
                    shell=1.0)
        flex = rng.uniform(-0.1, 0.35)
        top = centre + np.array([-8.0, 45.0]) * size
        shaft = np.array([top, top + 300.0 * np.array([math.sin(flex), math.cos(flex)])])
        canvas.tube(shaft, 14.0 * size, 1.2 * femur, shell=4.5 * size)
        canvas.ellipsoid(centre + np.array([-18.0, 38.0]) * size, (1.0, 0.4), 22.0 * size,
                         18.0 * size, 14.0 * femur)
        canvas.tube(centre + np.array([[-25.0, 20.0], [-30.0, 75.0]]) * size, 11.0 * size,
                    1.3, shell=2.5)
        canvas.tube(centre + np.array([[25.0, 10.0], [60.0, 45.0]]) * size, 8.0 * size, 1.3,
                    shell=2.0)


def _add_gas(canvas, p, anatomy, rng, look):
    """Bowel gas: dark blobs, mostly anterior, often over the anterior bodies."""
    d = p["difficulty"]
    n = int(rng.poisson(5.0 * d) + (1 if d > 0 else 0))
    n = p.get("n_gas_override", n)
    look["n_gas"] = n
    _, (ay, ax) = _spine_lines(anatomy)
    y_top = float(anatomy["outlines"]["T12"][0][1])
    y_bottom = float(anatomy["hip"][1])
    size = p["size"]
    for _ in range(n):
        y = rng.uniform(y_top, y_bottom)
        x_ant = float(np.interp(y, ay, ax))
        over_body = rng.random() < 0.4
        x = x_ant + (rng.uniform(-14.0, 4.0) if over_body else rng.uniform(5.0, 110.0)) * size
        depth = rng.uniform(12.0, 40.0) * _gas_scale(d)
        # A pocket: a few overlapping soft ellipsoids (colon contents are irregular).
        for _ in range(int(rng.integers(1, 4))):
            a = rng.uniform(5.0, 18.0) * size
            b = a * rng.uniform(0.35, 1.0)
            angle = rng.uniform(0, math.pi)
            centre = np.array([x, y]) + rng.normal(0.0, 6.0, 2) * size
            canvas.ellipsoid(centre, (math.cos(angle), math.sin(angle)), a, b,
                             -depth * rng.uniform(0.6, 1.0), power=1.0)


# ============================================================================ outputs
def _annotation(p, anatomy, frame) -> dict:
    """The annotation dict (input pixels); outlines rounded to 1/1000 px."""
    fractures = {f["level"]: f for f in p["fractures"]}
    vertebrae = {}
    for name in _ANNOTATED:
        outline = np.round(frame.to_image(anatomy["outlines"][name]), 3)
        fr = fractures.get(name)
        vertebrae[name] = {
            "centre": [float(v) for v in outline[[0, 2, 4, 6]].mean(axis=0)],
            "outline": [[float(x), float(y)] for x, y in outline],
            "genant_grade": int(fr["grade"]) if fr else 0,
            "genant_type": fr["type"] if fr else "normal",
        }
    plate = np.round(frame.to_image(np.array(anatomy["s1_plate"])), 3)
    vertebrae["S1"] = {"upper_endplate": [[float(x), float(y)] for x, y in plate]}
    s = float(p["pixel_spacing_mm"])
    return {"format": "lumbar-xray-seg/annotation", "version": 1,
            "image_shape": [int(v) for v in p["shape"]], "pixel_spacing_mm": [s, s],
            "anterior": p["anterior"], "vertebrae": vertebrae}


def _heights(o):
    """(ha, hm, hp) of an 8-point outline, as the annotation format defines them."""
    return (float(np.linalg.norm(o[0] - o[6])), float(np.linalg.norm(o[1] - o[5])),
            float(np.linalg.norm(o[2] - o[4])))


def _meta(seed, p, anatomy, look) -> dict:
    """JSON-serialisable record of the drawn parameters."""
    fractures = []
    for fr in p["fractures"]:
        ha, hm, hp = _heights(anatomy["outlines"][fr["level"]])
        fractures.append(dict(fr, heights_mm={"anterior": ha, "middle": hm, "posterior": hp}))
    keep = ("modality", "abnormal", "difficulty", "shape", "pixel_spacing_mm", "anterior",
            "rotation_deg", "size", "lordosis_deg", "sacral_slope_deg", "pelvic_tilt_deg",
            "osteoporosis", "spondylolisthesis", "disc_narrowing", "sclerosis",
            "bone_density", "cortex_density")
    meta = {"seed": seed, **{k: p[k] for k in keep}}
    meta["lordosis_measured_deg"] = anatomy["lordosis_measured_deg"]
    meta["fractures"] = fractures
    meta["osteophyte_levels"] = sorted(p["osteophytes"])
    meta["working_grid_factor"] = int(max(1, round(_WORK_MM / p["pixel_spacing_mm"])))
    meta.update(look)
    return _jsonable(meta)


def _jsonable(obj):
    """Numpy scalars and tuples -> Python types, recursively."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj)
    return obj
