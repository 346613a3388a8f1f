"""Canonical geometry: known answers on synthetic images and polygons; alignment on real FracAtlas cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fxbench.data import geometry as g
from PIL import Image, ImageDraw


def test_placement_centres_and_puts_the_odd_pixel_bottom_right():
    p = g.placement(100, 51)
    assert (p.side, p.left, p.top) == (100, 0, 24)  # 24 rows above, 25 below
    q = g.placement(51, 100)
    assert (q.side, q.left, q.top) == (100, 24, 0)
    top_left, bottom_right = p.to_canonical(0, 0), p.to_canonical(100, 51)
    assert (top_left.x, top_left.y) == pytest.approx((0.0, 24 * 2.24))
    assert (bottom_right.x, bottom_right.y) == pytest.approx((224.0, 75 * 2.24))  # 25 black rows below


def test_canonical_image_pads_black_and_keeps_content_centred():
    im = Image.new("L", (200, 100), 255)
    out = g.canonical_image(im)
    assert out.shape == (224, 224) and out.dtype == np.uint8
    # 50 black rows on each side of 200 -> 56 canonical rows; LANCZOS (3 lobes) blurs a few rows at the seam.
    assert out[:52].max() == 0 and out[-52:].max() == 0
    assert out[60:164].min() == 255
    assert np.array_equal(out, out[::-1])  # even padding: symmetric


def test_canonical_image_converts_colour_to_luminance():
    rgb = Image.new("RGB", (224, 224), (255, 0, 0))
    assert int(g.canonical_image(rgb)[100, 100]) == 76  # ITU-R 601 luma of pure red


def test_mask_of_half_the_image_is_exactly_half_the_columns():
    mask = g.canonical_mask([[0, 0, 224, 0, 224, 448, 0, 448]], width=448, height=448)
    assert mask[:, :112].all() and not mask[:, 112:].any()


def test_mask_pixel_needs_half_coverage():
    big = [100, 100, 150, 100, 150, 150, 100, 150]
    half = [10, 0, 10.5, 0, 10.5, 224, 10, 224]  # covers half of column 10 in a 224 x 224 image
    less = [10, 0, 10.4, 0, 10.4, 224, 10, 224]
    assert g.canonical_mask([big, half], width=224, height=224)[:, 10].all()
    assert not g.canonical_mask([big, less], width=224, height=224)[:, 10].any()
    # alone, a sliver keeps its best-covered pixels: a fractured image never gets an empty mask
    alone = g.canonical_mask([less], width=224, height=224)
    assert alone[:, 10].all() and alone.sum() == 224


def test_triangle_known_answer():
    # Below the diagonal x + y = 224 every pixel is covered; a diagonal pixel has 28 of 64 sub-pixel centres
    # strictly inside (less than half), so the mask is the x + y < 223 staircase.
    mask = g.canonical_mask([[0, 0, 224, 0, 0, 224]], width=224, height=224)
    assert mask.sum() == 224 * 223 // 2
    yy, xx = np.mgrid[:224, :224]
    assert np.array_equal(mask, xx + yy < 223)


def test_coverage_integrates_to_the_polygon_area():
    poly = [30.2, 40.7, 180.9, 55.1, 150.3, 190.6, 20.4, 160.2]  # in a 300 x 300 frame
    xs, ys = np.array(poly[0::2]), np.array(poly[1::2])
    area = 0.5 * abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))) * (224 / 300) ** 2
    assert g.mask_coverage([poly], width=300, height=300).sum() == pytest.approx(area, rel=0.005)


def test_union_of_overlapping_polygons():
    a = [0, 0, 112, 0, 112, 224, 0, 224]
    b = [56, 0, 168, 0, 168, 224, 56, 224]
    assert g.canonical_mask([a, b], width=224, height=224).sum() == 168 * 224


def test_mask_follows_the_image_through_padding_and_scaling():
    """A bright box drawn on a non-square image lands where its polygon's mask lands."""
    w, h, box = 300, 120, (40, 30, 100, 90)
    im = Image.new("L", (w, h), 0)
    ImageDraw.Draw(im).rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=255)
    pixels = g.canonical_image(im)
    mask = g.canonical_mask(
        [[box[0], box[1], box[2], box[1], box[2], box[3], box[0], box[3]]], width=w, height=h
    )
    bright = pixels >= 128
    assert (mask & bright).sum() / (mask | bright).sum() > 0.95


def test_exif_orientation_is_applied(tmp_path):
    shown = Image.new("L", (80, 60), 0)
    ImageDraw.Draw(shown).rectangle([0, 0, 19, 9], fill=255)  # bright top-left corner as displayed
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "r.jpg"
    shown.transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif.tobytes())
    o = g.open_oriented(str(path))
    assert o.exif_orientation == 6 and o.stored_size == (60, 80) and o.size == (80, 60)
    assert np.asarray(o.image.convert("L"))[:10, :20].mean() > 200


def test_png_round_trip_keeps_pixels_and_binary_masks():
    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, size=(224, 224), dtype=np.uint8)
    assert np.array_equal(g.decode_png(g.encode_png(px)), px)
    m = rng.random((224, 224)) > 0.5
    assert set(np.unique(g.decode_png(g.encode_png(m)))) == {0, 255}


# --- real cases from the shared FracAtlas copy ------------------------------------------------------------


def _case(root, name):
    coco = json.loads((root / "Annotations" / "COCO JSON" / "COCO_fracture_masks.json").read_text())
    im = next(i for i in coco["images"] if i["file_name"] == name)
    polys = [p for a in coco["annotations"] if a["image_id"] == im["id"] for p in a["segmentation"]]
    return root / "images" / "Fractured" / name, polys, im["width"], im["height"]


def _reference_mask(polys, w, h):
    """The direct rule: rasterise in the annotators' frame, pad, resize (area average), threshold."""
    m = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(m)
    for p in polys:
        draw.polygon([(x - 0.5, y - 0.5) for x, y in zip(p[0::2], p[1::2])], fill=255)
    pl = g.placement(w, h)
    sq = Image.new("L", (pl.side, pl.side), 0)
    sq.paste(m, (pl.left, pl.top))
    return np.asarray(sq.resize((g.SIZE, g.SIZE), Image.Resampling.BOX)) >= 128


@pytest.mark.parametrize("name,orientation", [("IMG0002628.jpg", 8), ("IMG0002588.jpg", 3)])
def test_exif_cases_align_only_with_exif_applied(shared_fracatlas, name, orientation):
    path, polys, w, h = _case(shared_fracatlas, name)
    o = g.open_oriented(str(path))
    assert o.exif_orientation == orientation and o.size == (w, h)
    if name == "IMG0002628.jpg":
        assert o.stored_size == (373, 454) and (w, h) == (454, 373)
    pixels = g.canonical_image(o.image)
    mask = g.canonical_mask(polys, width=w, height=h)
    with Image.open(path) as raw:  # what a loader ignoring EXIF would pair with the same mask
        ignored = g.canonical_image(raw.convert("L"))
    # Fractures are outlined on bone, which is bright: the mask lands on bone only with EXIF applied.
    assert pixels[mask].mean() > pixels.mean() + 30
    assert pixels[mask].mean() > ignored[mask].mean() + 25


@pytest.mark.parametrize("name", ["IMG0002628.jpg", "IMG0000019.jpg", "IMG0000025.jpg", "IMG0000057.jpg"])
def test_supersampled_mask_matches_the_direct_rule(shared_fracatlas, name):
    _, polys, w, h = _case(shared_fracatlas, name)
    mask = g.canonical_mask(polys, width=w, height=h)
    ref = _reference_mask(polys, w, h)
    assert (mask & ref).sum() / (mask | ref).sum() > 0.85
