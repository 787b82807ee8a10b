"""Tests of lumbar_core.phantom: the synthetic demo cohort."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from skimage.draw import polygon

from lumbar_core import io as lio
from lumbar_core import phantom
from lumbar_core.phantom import render_phantom, write_demo_cohort

# Small images (a 480 x 360 mm field at 1 mm per pixel) keep the tests fast.
SMALL = {"shape": (480, 360), "pixel_spacing_mm": 1.0}
LUMBAR = ("L1", "L2", "L3", "L4", "L5")
GENANT = {1: (0.20, 0.25), 2: (0.25, 0.40), 3: (0.40, 1.0)}


def _outline(ann, level):
    return np.array(ann["vertebrae"][level]["outline"], dtype=float)


def _heights(o):
    """(ha, hm, hp) as the annotation format defines them."""
    return (np.linalg.norm(o[0] - o[6]), np.linalg.norm(o[1] - o[5]),
            np.linalg.norm(o[2] - o[4]))


def _mask(o, shape):
    mask = np.zeros(shape, dtype=bool)
    rr, cc = polygon(o[:, 1], o[:, 0], shape)
    mask[rr, cc] = True
    return mask


def _reduction(ann, level, kind):
    """Height reduction of a fracture type, with the reference the docstring names."""
    ha, hm, hp = _heights(_outline(ann, level))
    if kind == "wedge":
        return 1 - ha / hp
    if kind == "biconcave":
        return 1 - hm / hp
    order = ("T12",) + LUMBAR
    i = order.index(level)
    neighbours = [order[j] for j in (i - 1, i + 1) if 0 <= j < len(order)]
    return 1 - hp / np.mean([_heights(_outline(ann, n))[2] for n in neighbours])


def test_same_seed_gives_identical_bytes():
    a_img, a_ann, a_meta = render_phantom(7, modality="CR", abnormal=True, **SMALL)
    b_img, b_ann, b_meta = render_phantom(7, modality="CR", abnormal=True, **SMALL)
    assert a_img.tobytes() == b_img.tobytes()
    assert json.dumps(a_ann) == json.dumps(b_ann)
    assert json.dumps(a_meta) == json.dumps(b_meta)


def test_different_seed_gives_different_image():
    a_img, a_ann, _ = render_phantom(1, **SMALL)
    b_img, b_ann, _ = render_phantom(2, **SMALL)
    assert not np.array_equal(a_img, b_img)
    assert a_ann["vertebrae"]["L3"]["centre"] != b_ann["vertebrae"]["L3"]["centre"]


@pytest.mark.parametrize("modality, bits", [("DR", (12, 14, 16)), ("CR", (12,))])
def test_image_and_annotation_format(modality, bits):
    image, ann, meta = render_phantom(3, modality=modality, abnormal=True, **SMALL)
    assert image.shape == (480, 360) and image.dtype == np.uint16
    assert meta["bits_stored"] in bits
    assert image.max() <= 2 ** meta["bits_stored"] - 1
    assert ann["image_shape"] == [480, 360] and ann["pixel_spacing_mm"] == [1.0, 1.0]
    assert ann["anterior"] in ("left", "right")
    assert set(ann["vertebrae"]) == {"T12", "L1", "L2", "L3", "L4", "L5", "S1"}
    for level in ("T12",) + LUMBAR:
        entry = ann["vertebrae"][level]
        o = np.array(entry["outline"])
        assert o.shape == (8, 2)
        np.testing.assert_allclose(entry["centre"], o[[0, 2, 4, 6]].mean(axis=0))
        assert np.all(o >= 0) and np.all(o[:, 0] <= 359) and np.all(o[:, 1] <= 479)
        assert entry["genant_grade"] in (0, 1, 2, 3)
    assert len(ann["vertebrae"]["S1"]["upper_endplate"]) == 2
    json.dumps(meta)  # JSON-serialisable


def test_levels_run_top_to_bottom_and_face_the_belly():
    for anterior in ("left", "right"):
        _, ann, _ = render_phantom(4, anterior=anterior, rotation_deg=0.0, **SMALL)
        ys = [ann["vertebrae"][n]["centre"][1] for n in ("T12",) + LUMBAR]
        assert np.all(np.diff(ys) > 0)
        o = _outline(ann, "L3")
        front = o[[0, 6, 7], 0].mean() - o[[2, 3, 4], 0].mean()
        assert (front < 0) == (anterior == "left")


@pytest.mark.parametrize("modality", ["DR", "CR"])
@pytest.mark.parametrize("abnormal", [False, True])
def test_outlines_lie_on_rendered_vertebrae(modality, abnormal):
    # Mean intensity inside each L1-L5 outline exceeds that of a ring of the tissue
    # around it (2-6 mm out, other bodies excluded), whatever overlaps.
    for seed in range(3):
        image, ann, _ = render_phantom(seed, modality=modality, abnormal=abnormal, **SMALL)
        image = image.astype(float)
        masks = {n: _mask(_outline(ann, n), image.shape) for n in ("T12",) + LUMBAR}
        bodies = np.any(list(masks.values()), axis=0)
        for level in LUMBAR:
            m = masks[level]
            ring = (ndimage.binary_dilation(m, iterations=6)
                    & ~ndimage.binary_dilation(m, iterations=2) & ~bodies)
            assert image[m].mean() > image[ring].mean(), (seed, level)


@pytest.mark.parametrize("fractures", [[], [{"level": "L3", "grade": 3, "type": "biconcave"}]])
def test_outline_is_the_rendered_body(fractures):
    # Ground truth by construction: the region a body is rendered into is its filled
    # 8-point outline (Dice >= 0.95), here on a grid with 0.45 mm pixels.
    rng = np.random.default_rng(0)
    p = phantom._draw_geometry(rng, "DR", 1.0)
    p.update(phantom._draw_pathology(rng, True))
    p.update(shape=[1100, 800], pixel_spacing_mm=0.45,
             fractures=phantom._check_fractures(fractures))
    anatomy = phantom._build_anatomy(p)
    frame = phantom._Frame(p, anatomy)
    assert frame.f == 1
    canvas = phantom._Canvas(frame)
    canvas.body(anatomy["outlines"]["L3"], width=45.0, rho_t=0.3, rho_c=1.8, plate_gain=0.3,
                plate_sigma=0.6, texture=np.zeros(frame.work_shape, np.float32),
                tex_gain=0.0)
    truth = _mask(frame.to_image(anatomy["outlines"]["L3"]), frame.shape)
    rendered = canvas.we > 0
    dice = 2 * (truth & rendered).sum() / (truth.sum() + rendered.sum())
    assert dice >= 0.95


@pytest.mark.parametrize("kind", ["wedge", "biconcave", "crush"])
@pytest.mark.parametrize("grade", [1, 2, 3])
def test_fracture_heights_in_genant_range(kind, grade):
    fracture = {"level": "L2", "grade": grade, "type": kind}
    _, ann, meta = render_phantom(8, abnormal=True, fractures=[fracture], **SMALL)
    lo, hi = GENANT[grade]
    assert lo < _reduction(ann, "L2", kind) < hi
    assert ann["vertebrae"]["L2"]["genant_grade"] == grade
    assert ann["vertebrae"]["L2"]["genant_type"] == kind
    for level in ("T12", "L1", "L3", "L4", "L5"):
        assert ann["vertebrae"][level]["genant_grade"] == 0
        assert ann["vertebrae"][level]["genant_type"] == "normal"
    assert meta["fractures"][0]["level"] == "L2"


def test_drawn_fractures_match_their_grades_and_normals_stay_normal():
    grades_seen = set()
    for seed in range(12):
        _, ann, meta = render_phantom(seed, abnormal=True, **SMALL)
        for level in ("T12",) + LUMBAR:
            entry = ann["vertebrae"][level]
            if entry["genant_grade"] == 0:
                for kind in ("wedge", "biconcave"):
                    assert _reduction(ann, level, kind) < 0.2, (seed, level, kind)
            else:
                lo, hi = GENANT[entry["genant_grade"]]
                assert lo < _reduction(ann, level, entry["genant_type"]) < hi, (seed, level)
                grades_seen.add(entry["genant_grade"])
        assert meta["abnormal"] and (meta["fractures"] or meta["spondylolisthesis"])
    assert grades_seen == {1, 2, 3}
    for seed in range(4):
        _, ann, meta = render_phantom(seed, abnormal=False, **SMALL)
        assert all(ann["vertebrae"][n]["genant_grade"] == 0 for n in ("T12",) + LUMBAR)
        assert meta["fractures"] == [] and meta["spondylolisthesis"] is None


def test_spondylolisthesis_slips_the_level_forward():
    kwargs = dict(SMALL, rotation_deg=0.0, anterior="right", fractures=[])
    _, plain, _ = render_phantom(9, abnormal=True, spondylolisthesis=None, **kwargs)
    _, slipped, _ = render_phantom(9, abnormal=True,
                                   spondylolisthesis={"level": "L5", "grade": 2}, **kwargs)

    def l5_offset(ann):
        # Lower posterior corner of L5 relative to the posterior S1 corner, along S1.
        s1 = np.array(ann["vertebrae"]["S1"]["upper_endplate"])
        along = (s1[0] - s1[1]) / np.linalg.norm(s1[0] - s1[1])
        return (_outline(ann, "L5")[4] - s1[1]) @ along / np.linalg.norm(s1[0] - s1[1])

    assert 0.25 < l5_offset(slipped) - l5_offset(plain) < 0.5


@pytest.mark.parametrize("bad, match", [
    ({"modality": "MR"}, "modality"),
    ({"difficulty": -1.0}, "difficulty"),
    ({"colour": 1}, "unknown override 'colour'"),
    ({"fractures": [{"level": "L1", "grade": 4, "type": "wedge"}]}, "bad fracture"),
    ({"fractures": [{"level": "L1", "grade": 1, "type": "wedge"},
                    {"level": "L2", "grade": 1, "type": "crush"}]}, "adjacent"),
    ({"anterior": "up"}, "anterior"),
    ({"shape": (10, 10)}, "shape"),
    ({"shape": (200, 200)}, "field of view is too small"),
])
def test_bad_arguments_raise_value_error(bad, match):
    kwargs = dict(SMALL)
    kwargs.update(bad)
    with pytest.raises(ValueError, match=match):
        render_phantom(0, **kwargs)


def test_bad_seed_raises_value_error():
    with pytest.raises(ValueError, match="seed"):
        render_phantom(-1)


# ---------------------------------------------------------------------- the cohort

@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    # Seed 4 gives a DR TIFF, a DR PNG, and CR DICOM in MONOCHROME2 and MONOCHROME1.
    sheet = write_demo_cohort(out, seed=4, n_train=2, n_val=1, n_test_per_stratum=1)
    return out, sheet


def test_cohort_sheet_is_valid_and_balanced(tiny_cohort):
    out, sheet = tiny_cohort
    assert sheet == out / "samples.tsv"
    df = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False)
    assert list(df.columns) == ["image_id", "image", "annotation", "split", "modality",
                                "group", "pixel_spacing_mm"]
    assert list(df["image_id"]) == [f"demo_{k:04d}" for k in range(1, 8)]
    assert list(df["split"]) == ["train"] * 2 + ["val"] + ["test"] * 4
    test = df[df["split"] == "test"]
    assert sorted(zip(test["modality"], test["group"])) == [
        ("CR", "abnormal"), ("CR", "normal"), ("DR", "abnormal"), ("DR", "normal")]
    for _, row in df.iterrows():
        assert (out / row["image"]).is_file() and (out / row["annotation"]).is_file()
        assert row["image"].endswith(".dcm") == (row["modality"] == "CR")
        assert 0.1 <= float(row["pixel_spacing_mm"]) <= 0.2
        image, props = lio.read_image(out / row["image"])
        ann = lio.read_annotation(out / row["annotation"], image_shape=image.shape)
        assert props["shape"] == tuple(ann["image_shape"])


def test_cohort_images_read_back_as_rendered(tiny_cohort):
    # Every kind of stored file, DICOM MONOCHROME1 with its rescale included, reads
    # back to the rendered (bone-bright) values exactly.
    out, sheet = tiny_cohort
    df = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False)
    kinds = set()
    for number, (split_code, k) in ((1, (0, 0)), (2, (0, 1)), (3, (1, 0)), (6, (2, 2))):
        plan = phantom._cohort_draw(4, split_code, k)
        rendered, _, _ = render_phantom(plan["seed"], modality=plan["modality"],
                                        abnormal=plan["abnormal"])
        image, props = lio.read_image(out / df["image"].iloc[number - 1])
        np.testing.assert_array_equal(image, rendered.astype(np.float32))
        kinds.add((props["format"], props["photometric"]))
    assert kinds == {("tiff", "MONOCHROME2"), ("png", None), ("dicom", "MONOCHROME2"),
                     ("dicom", "MONOCHROME1")}


def test_cohort_does_not_depend_on_workers_or_split_sizes(tiny_cohort, tmp_path):
    out, _ = tiny_cohort
    other = write_demo_cohort(tmp_path, seed=4, n_train=1, n_val=0, n_test_per_stratum=0,
                              workers=2)
    row = pd.read_csv(other, sep="\t", dtype=str, keep_default_na=False).iloc[0]
    assert (tmp_path / row["image"]).read_bytes() == (out / row["image"]).read_bytes()
    assert (tmp_path / row["annotation"]).read_bytes() == (out / row["annotation"]).read_bytes()


def test_cohort_rejects_bad_counts(tmp_path):
    with pytest.raises(ValueError, match="n_train"):
        write_demo_cohort(tmp_path, n_train=-1)
    with pytest.raises(ValueError, match="empty"):
        write_demo_cohort(tmp_path, n_train=0, n_val=0, n_test_per_stratum=0)


# ------------------------------------------------------------------ styles
# SHA-256 (first 16 hex digits) of classic renderings made before the film style
# existed: the classic look (the demo's models and tables) must not change.
CLASSIC_HASHES = {(3, "DR", False): "28bfc992d32023f3", (7, "CR", True): "8fa939a591bca22c"}


@pytest.mark.parametrize("key", sorted(CLASSIC_HASHES))
def test_classic_style_renders_the_same_bytes_as_before(key):
    import hashlib

    seed, modality, abnormal = key
    kwargs = {"modality": modality, "abnormal": abnormal, "shape": (600, 420),
              "pixel_spacing_mm": 0.7}
    image, ann, meta = render_phantom(seed, **kwargs)
    assert hashlib.sha256(image.tobytes()).hexdigest()[:16] == CLASSIC_HASHES[key]
    again, ann2, meta2 = render_phantom(seed, style="classic", **kwargs)
    assert np.array_equal(image, again) and ann == ann2 and meta == meta2
    assert "style" not in meta


def test_bad_style_raises_value_error(tmp_path):
    with pytest.raises(ValueError, match="style"):
        render_phantom(0, style="photo")
    with pytest.raises(ValueError, match="style"):
        write_demo_cohort(tmp_path, n_train=1, n_val=0, n_test_per_stratum=0, style="x")


def _spine_statistics(ann):
    """The statistics of the real-geometry table, measured on one annotation (px)."""
    v = ann["vertebrae"]
    o = {n: np.array(v[n]["outline"], dtype=float) for n in LUMBAR}
    s1 = np.array(v["S1"]["upper_endplate"], dtype=float)  # [anterior, posterior]
    out = {}
    for n in LUMBAR:
        ha, _, hp = _heights(o[n])
        w = (np.linalg.norm(o[n][0] - o[n][2]) + np.linalg.norm(o[n][6] - o[n][4])) / 2
        out[("body_height_px", n)] = (ha + hp) / 2
        out[("plate_width_px", n)] = w
        out[("height_to_width", n)] = (ha + hp) / 2 / w
        out[("wedge_ha_hp", n)] = ha / hp
    mean_h = np.mean([out[("body_height_px", n)] for n in LUMBAR])
    centre = {n: np.array(v[n]["centre"]) for n in LUMBAR}
    uppers = [o[n][[0, 2]] for n in LUMBAR[1:]] + [s1]
    for n, upper in zip(LUMBAR, uppers):
        lower_mid = (o[n][4] + o[n][6]) / 2
        out[("disc_height", n)] = np.linalg.norm(upper.mean(axis=0) - lower_mid) / mean_h
    for a, b in zip(LUMBAR, LUMBAR[1:]):
        out[("centre_spacing", a)] = np.linalg.norm(centre[b] - centre[a]) / mean_h
    out[("l1_l5_distance_px", None)] = np.linalg.norm(centre["L5"] - centre["L1"])
    forward = -1.0 if ann["anterior"] == "left" else 1.0  # image x towards the belly

    def slope(anterior, posterior):  # degrees below the horizontal towards the belly
        d = anterior - posterior
        return np.degrees(np.arctan2(d[1], forward * d[0]))

    out[("lordosis_deg", None)] = slope(*s1) - slope(o["L1"][0], o["L1"][2])
    d = centre["L5"] - centre["L1"]
    out[("l1_l5_tilt_deg", None)] = np.degrees(np.arctan2(forward * d[0], d[1]))
    out[("s1_slope_deg", None)] = slope(*s1)
    pts = np.concatenate([o[n] for n in LUMBAR] + [s1])
    out[("box_width_px", None)] = np.ptp(pts[:, 0])
    out[("box_height_px", None)] = np.ptp(pts[:, 1])
    out[("box_top_px", None)] = pts[:, 1].min()
    out[("box_bottom_px", None)] = pts[:, 1].max()
    out[("wedge_share", None)] = float(min(out[("wedge_ha_hp", n)] for n in LUMBAR) < 0.8)
    slips = []
    for n, upper in zip(LUMBAR, uppers):  # along the plate below, towards the belly
        t = upper[0] - upper[1]
        slips.append(np.dot(o[n][4] - upper[1], t) / np.dot(t, t))
    out[("slip_share", None)] = float(max(slips) > 0.10)
    out[("anterior_left_share", None)] = float(ann["anterior"] == "left")
    return out


@pytest.fixture(scope="module")
def film_spines():
    """500 film-style spines (geometry only), abnormal at a clinical prevalence of 20 %."""
    rng = np.random.default_rng(0)
    stats, shapes = [], []
    for seed in range(500):
        p, anatomy, frame, _ = phantom._spine(seed, "DR", bool(rng.random() < 0.2), 1.0,
                                              "film", {})
        ann = phantom._annotation(p, anatomy, frame)
        stats.append(_spine_statistics(ann))
        shapes.append(ann["image_shape"])
    return stats, np.array(shapes)


def test_film_geometry_follows_the_real_distributions(film_spines):
    """Each statistic of 500 spines against the real table: mean within a quarter of
    the SD; 5th and 95th percentiles inside the table's [5th, 95th] range widened by a
    quarter SD (or, where the table gives no percentiles, inside mean +- 2 SD), and a
    spread of at least half the table's."""
    stats, _ = film_spines
    real = phantom.REAL_GEOMETRY
    failures = []
    for key in stats[0]:
        name, level = key
        if name.endswith("_share"):
            continue
        x = np.array([s[key] for s in stats])
        row = real[name][level] if level else real[name]
        mean, sd = row[0], row[1]
        p5, p95 = np.percentile(x, [5, 95])
        lo, hi = (row[2], row[3]) if len(row) == 4 else (mean - 2 * sd, mean + 2 * sd)
        spread = (row[3] - row[2]) if len(row) == 4 else 3.29 * sd
        if not (abs(x.mean() - mean) <= sd / 4 and lo - sd / 4 <= p5 and p95 <= hi + sd / 4
                and p95 - p5 >= spread / 2):
            failures.append(f"{name} {level}: mean {x.mean():.3f} p5 {p5:.3f} p95 {p95:.3f} "
                            f"vs {row}")
    assert not failures, "\n".join(failures)


def test_film_pathology_shares_and_films_are_real_sizes(film_spines):
    stats, shapes = film_spines
    real = phantom.REAL_GEOMETRY
    for name in ("wedge_share", "slip_share"):
        share = np.mean([s[(name, None)] for s in stats])
        assert 0.5 * real[name] <= share <= 1.5 * real[name], (name, share)
    assert all(s[("anterior_left_share", None)] == 1.0 for s in stats)
    rows, cols = shapes[:, 0], shapes[:, 1]
    assert rows.min() >= 2500 and np.percentile(rows, 95) <= 3200
    aspect = rows / cols
    two_to_one = np.abs(aspect - 2.0) < 0.05
    assert 0.1 <= two_to_one.mean() <= 0.3
    assert aspect[~two_to_one].min() >= 0.9 and np.percentile(aspect[~two_to_one], 95) <= 1.45
    # The film shows thoracic vertebrae above L1 and the sacrum below S1's plate.
    assert np.mean([s[("box_top_px", None)] for s in stats]) > 250


def _body_contrast(image, ann, level="L3"):
    """(median inside the body - median of a band around it) / (p99 - p1) of the film."""
    o = _outline(ann, level)
    inside = _mask(o, image.shape)
    grown = ndimage.binary_dilation(inside, iterations=12)
    ring = grown & ~ndimage.binary_dilation(inside, iterations=4)
    lo, hi = np.percentile(image, [1, 99])
    return (np.median(image[inside]) - np.median(image[ring])) / (hi - lo)


def test_film_bodies_are_grey_and_ground_truth_exact():
    kw = {"shape": (600, 480), "pixel_spacing_mm": 0.7}
    film, classic = [], []
    for seed in range(3):
        image, ann, meta = render_phantom(seed, abnormal=bool(seed % 2), style="film", **kw)
        assert meta["style"] == "film" and ann["anterior"] == "left"
        assert image.shape == (600, 480) and image.dtype == np.uint16
        for level in LUMBAR + ("T12",):
            o = _outline(ann, level)
            assert np.allclose(ann["vertebrae"][level]["centre"], o[[0, 2, 4, 6]].mean(axis=0),
                               atol=1e-3)
            assert (o >= 0).all() and (o[:, 0] < 480).all() and (o[:, 1] < 600).all()
        film.append(_body_contrast(image.astype(float), ann))
        image, ann, _ = render_phantom(seed, abnormal=bool(seed % 2), **kw)
        classic.append(_body_contrast(image.astype(float), ann))
    # Bodies are brighter than what surrounds them, but far less than in the classic look.
    assert 0 < np.median(film) < 0.6 * np.median(classic), (film, classic)


def test_film_cohort_is_written_with_the_film_style(tmp_path):
    sheet = write_demo_cohort(tmp_path, seed=1, n_train=1, n_val=0, n_test_per_stratum=0,
                              style="film")
    row = pd.read_csv(sheet, sep="\t").iloc[0]
    ann = json.loads((tmp_path / row["annotation"]).read_text())
    plan = phantom._cohort_draw(1, 0, 0)
    _, expected, _ = render_phantom(plan["seed"], modality=plan["modality"],
                                    abnormal=plan["abnormal"], style="film")
    assert ann["vertebrae"]["L3"]["outline"] == expected["vertebrae"]["L3"]["outline"]
    assert ann["image_shape"] == expected["image_shape"]


def test_film_back_soft_tissue_lies_behind_the_spine():
    # Real films show a thick band of back muscle and skin behind the spinous processes
    # (about a quarter of the film): 75-100 mm behind the L3 posterior wall the film
    # shows tissue at least a third as bright as the body over the soft-tissue floor,
    # not the air beyond the skin.
    kw = {"shape": (700, 600), "pixel_spacing_mm": 0.6, "collimation": "none",
          "marker": False}
    for seed in range(4):
        image, ann, _ = render_phantom(seed, style="film", **kw)
        o = _outline(ann, "L3")
        row, back = int(round(o[:, 1].mean())), o[:, 0].max()  # anterior on the left
        band = image[row - 20:row + 20, int(back + 75 / 0.6):int(back + 100 / 0.6)]
        body = np.median(image[row - 5:row + 5, int(o[:, 0].min()) + 5:int(back) - 5])
        floor = np.percentile(image, 1)
        assert band.size > 0
        assert (np.median(band) - floor) / (body - floor) > 0.3, seed


def test_film_is_deterministic_and_markers_vary():
    kw = {"shape": (500, 420), "pixel_spacing_mm": 0.8}
    image, ann, meta = render_phantom(11, style="film", **kw)
    again, ann2, meta2 = render_phantom(11, style="film", **kw)
    assert np.array_equal(image, again) and ann == ann2 and meta == meta2
    texts = set()
    for seed in range(12):
        _, _, meta = render_phantom(seed, style="film", marker=True, **kw)
        texts.add(meta["marker"].get("text", meta["marker"]["letter"]))
    assert len(texts) >= 3 and {t[0] for t in texts} == {"L", "R"}, texts


def test_film_bowel_gas_loops_lie_in_front_of_the_spine():
    # Real lateral films show clusters of rounded gas cells in the bowel in front of the
    # spine, overlying the front of the bodies but never their back half or the canal.
    for seed in range(6):
        p, anatomy, frame, streams = phantom._spine(seed, "DR", False, 1.0, "film", {})
        canvas = phantom._Canvas(frame)
        look = {}
        phantom._add_gas_loops(canvas, p, anatomy, streams[3], look, reach=130.0)
        assert len(look["gas_loops"]) >= 1
        gas = canvas.we < -0.5
        X, Y = frame.coords(slice(0, frame.work_shape[0]), slice(0, frame.work_shape[1]))
        (_, (ay, ax)) = phantom._spine_lines(anatomy)
        front = X - np.interp(Y, ay, ax)  # mm in front of the anterior walls
        if sum(look["gas_loops"]):
            assert gas.any(), seed
            # Darkest at the centre of a cell: a gas sphere's chord, several mm of water.
            assert canvas.we.min() < -4.0, seed
        assert (front[gas] >= -20.0 * p["size"] - 0.5).all(), seed


def test_film_bowel_gas_is_broken_up_by_stool():
    # Gas in real bowel has ragged, lobulated outlines with flecks of stool inside it,
    # never clean round holes: the film style scales each cell's depth by a mottle, and
    # keeps the gas where the loops are.
    for seed in range(4):
        p, anatomy, frame, streams = phantom._spine(seed, "DR", False, 1.0, "film", {})
        canvas = phantom._Canvas(frame)
        phantom._add_gas_loops(canvas, p, anatomy, streams[3], {}, reach=130.0)
        drawn = canvas.we
        look = {}
        gas = phantom._lobulate(drawn, streams[3], frame.work_mm, look)
        assert 0.5 <= look["gas_mottle_bias"] <= 0.9
        cells = drawn < -4.0  # well inside a cell
        if not cells.any():
            continue
        ratio = gas[cells] / drawn[cells]
        # Depth varies inside a cell (stool in the gas), from nearly none to deeper.
        assert ratio.std() > 0.2 and ratio.min() < 0.3 and ratio.max() > 1.0, seed
        # No gas where no loop was drawn (beyond the 1 mm blur).
        near = ndimage.binary_dilation(drawn < -0.01, iterations=int(3 / frame.work_mm) + 1)
        assert (gas[~near] > -0.05).all(), seed
        assert gas.min() >= 1.4 * drawn.min() - 1e-3, seed


def test_film_foramina_show_as_dark_keyholes_between_the_lateral_masses():
    # On real films the posterior band is as bright as the bodies, with the dark
    # intervertebral foramina in it behind each disc: the film style's lateral masses
    # (pedicles and articular processes) cover each pedicle with bone and leave the
    # foramen between two levels' pedicles bare.
    for seed in range(4):
        p, anatomy, frame, _ = phantom._spine(seed, "DR", False, 1.0, "film", {})
        canvas = phantom._Canvas(frame)
        look = {}
        phantom._add_lateral_masses(canvas, p, anatomy, np.random.default_rng(seed), look)
        assert 30.0 <= look["lateral_mass_mm"] <= 50.0
        r = int(1.5 / frame.work_mm)
        for upper, lower in zip(phantom._LUMBAR[:-1], phantom._LUMBAR[1:]):
            o, n = anatomy["outlines"][upper], anatomy["outlines"][lower]
            back = -phantom._unit((o[0] - o[2]) + (o[6] - o[4]))
            hp = float(np.linalg.norm(o[2] - o[4]))
            pedicle = o[2] + 7.0 * p["size"] * back + 0.31 * hp * phantom._unit(o[4] - o[2])
            foramen = (o[4] + n[2]) / 2 + 7.0 * p["size"] * back
            (pc, pr), (fc, fr) = np.round(frame.to_work(np.stack([pedicle, foramen])))
            bone = np.median(canvas.we[int(pr) - r:int(pr) + r + 1, int(pc) - r:int(pc) + r + 1])
            # 30-50 mm of bone at 0.35 x its density, mottled down to 0.3 x at most.
            assert bone > 0.3 * 0.8 * 30.0 * 0.35 * p["bone_density"], (seed, upper, bone)
            assert canvas.we[int(fr), int(fc)] < 0.1 * bone, (seed, upper)


def _plate_to_core(canvas, frame, o):
    # Bone along the body's mid-line, from the upper to the lower end plate: the densest
    # value near each plate over the median of the middle fifth.
    t = np.linspace(0, 1, 201)[:, None]
    w = np.round(frame.to_work(o[1][None] * (1 - t) + o[5][None] * t)).astype(int)
    values = canvas.we[w[:, 1], w[:, 0]]
    core = np.median(values[80:121])
    return min(values[:15].max(), values[-15:].max()) / core


def test_film_end_plates_show_as_bright_lines_over_a_faint_core():
    # On real films a body is little brighter than the tissue over it, but its end
    # plates show as bright lines: the film style's bone weights give end plates at
    # least three times the core's line integral, far more than the classic weights.
    for seed in range(4):
        p, anatomy, frame, _ = phantom._spine(seed, "DR", False, 1.0, "film", {})
        zero = np.zeros(frame.work_shape, np.float32)
        ratios = []
        for weights in (p, phantom._film_bone(p)):
            canvas = phantom._Canvas(frame)
            phantom._add_spine(canvas, weights, anatomy, zero)
            ratios.append(_plate_to_core(canvas, frame, anatomy["outlines"]["L3"]))
        assert ratios[1] > 3.0 and ratios[1] > 1.4 * ratios[0], (seed, ratios)


def test_film_sacrum_is_one_fused_bone_below_s1():
    # Adult films show S2-S5 as one tapering bone under S1, not a stack of separate
    # bodies with dark discs between them (which reads as more lumbar levels): along the
    # sacrum's mid-line the film style keeps bone at every junction of two segments, where
    # the classic drawing leaves a gap; S1 and its upper plate stay as they were.
    for seed in range(4):
        p, anatomy, frame, _ = phantom._spine(seed, "DR", False, 1.0, "film", {})
        zero = np.zeros(frame.work_shape, np.float32)
        sacrum = anatomy["sacrum"]
        drawn = {}
        for name, weights in (("classic", p), ("film", phantom._film_bone(p))):
            canvas = phantom._Canvas(frame)
            phantom._add_spine(canvas, weights, anatomy, zero)
            drawn[name] = canvas.we
        checked = 0
        for above, below in zip(sacrum[1:-1], sacrum[2:]):
            inside = (below[1] + below[5]) / 2  # the sacrum tapers: the smaller one
            junction = (above[5] + below[1]) / 2
            (ic, ir), (jc, jr) = np.round(frame.to_work(np.stack([inside, junction]))).astype(int)
            if not (0 <= ir < frame.work_shape[0] and 0 <= jr < frame.work_shape[0]):
                continue  # below the film's lower edge
            assert drawn["classic"][jr, jc] < 0.5 * drawn["classic"][ir, ic], seed
            assert drawn["film"][jr, jc] > 0.7 * drawn["film"][ir, ic], seed
            checked += 1
        assert checked >= 2, seed
        s1 = np.round(frame.to_work((sacrum[0][1] + sacrum[0][5])[None] / 2)).astype(int)[0]
        assert drawn["film"][s1[1], s1[0]] > 0
