import numpy as np
import pytest
from support.backend_helpers import LABEL_CONFIG, region_for
from label_studio_sdk.converter import brush
from label_studio_sdk.label_interface import LabelInterface

from labelstudio_backend.labelstudio.label_config import parse_label_config
from labelstudio_backend.labelstudio.regions import (
    RegionError,
    box_to_rectangle,
    decode_brush,
    encode_brush,
    geometry_items,
    instance_regions,
    mask_to_polygons_percent,
    parse_result,
    polygon_to_mask,
    rectangle_to_box,
)

CONFIG = parse_label_config(LABEL_CONFIG)


def blob(seed, size=(48, 64)):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: size[0], : size[1]]
    cy, cx = rng.integers(12, size[0] - 12), rng.integers(12, size[1] - 12)
    ry, rx = rng.integers(4, 11), rng.integers(4, 11)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


# ------------------------------------------------------------------------------------------------ brush
@pytest.mark.parametrize("seed", range(4))
def test_brush_round_trip_is_pixel_exact_with_0_255_values(seed):
    rng = np.random.default_rng(seed)
    mask = blob(seed) | (rng.random((48, 64)) > 0.97)  # a blob plus scattered single pixels
    rle = encode_brush(mask)
    rgba = brush.decode_rle(rle).reshape(48, 64, 4)
    assert set(np.unique(rgba).tolist()) <= {0, 255}  # 0/255 in every channel: visible in the editor
    assert (rgba[:, :, 3] == np.where(mask, 255, 0)).all()
    assert (decode_brush(rle, 64, 48) == mask).all()


def test_brush_round_trip_edge_cases():
    for mask in (np.zeros((7, 5), bool), np.ones((7, 5), bool), np.eye(9, 13, dtype=bool)):
        height, width = mask.shape
        assert (decode_brush(encode_brush(mask), width, height) == mask).all()


def test_brush_rle_of_wrong_length_is_refused():
    rle = encode_brush(blob(0))  # 64x48
    with pytest.raises(RegionError, match="encodes 12288 values"):
        decode_brush(rle, 64, 47)
    with pytest.raises(RegionError):
        decode_brush(rle, 48, 64 + 1)


@pytest.mark.parametrize("bad", [None, "abc", [1, 2, 3], [0, 0, 48, 0, 300, 1, 2], [0.5] * 10])
def test_brush_rle_garbage_is_refused(bad):
    with pytest.raises(RegionError):
        decode_brush(bad, 64, 48)


def test_truncated_brush_rle_is_refused_not_crashing():
    rle = encode_brush(blob(1))
    with pytest.raises(RegionError):
        decode_brush(rle[: len(rle) // 2], 64, 48)


def test_hostile_rle_header_is_refused_before_allocation():
    rle = [255, 255, 255, 255] + [0] * 20  # claims 4 G values
    with pytest.raises(RegionError, match="encodes"):
        decode_brush(rle, 64, 48)


# ------------------------------------------------------------------------------------------------ polygons
@pytest.mark.parametrize("seed", range(4))
def test_polygon_round_trip_of_hole_free_mask_is_pixel_exact(seed):
    mask = blob(seed)
    polygons = mask_to_polygons_percent(mask)
    assert len(polygons) == 1
    assert all(0 <= v <= 100 for point in polygons[0] for v in point)
    assert (polygon_to_mask(polygons[0], 64, 48) == mask).all()


def test_rectangle_mask_as_polygon_is_exact():
    mask = np.zeros((48, 64), bool)
    mask[5:20, 10:40] = True
    (points,) = mask_to_polygons_percent(mask)
    assert (polygon_to_mask(points, 64, 48) == mask).all()


@pytest.mark.parametrize("points", [[[10, 10], [20, 10]], [[10, 10], [120, 10], [20, 30]],
                                    [[10, -5], [20, 10], [20, 30]], [[10, "a"], [20, 10], [20, 30]], "x"])
def test_bad_polygons_are_refused(points):
    with pytest.raises(RegionError):
        polygon_to_mask(points, 64, 48)


def test_mask_in_parts_gives_one_polygon_per_sizeable_part():
    mask = np.zeros((48, 64), bool)
    mask[5:20, 5:20] = True
    mask[30:40, 40:55] = True
    mask[45, 2] = True  # a speck: dropped
    assert len(mask_to_polygons_percent(mask)) == 2


# ------------------------------------------------------------------------------------------------ rectangles
def test_rectangle_box_round_trip():
    box = (8.0, 6.0, 40.0, 30.0)  # xywh pixels
    value = box_to_rectangle(box, 80, 60)
    assert value == {"x": 10.0, "y": 10.0, "width": 50.0, "height": 50.0, "rotation": 0}
    assert rectangle_to_box(value, 80, 60) == (8.0, 6.0, 48.0, 36.0)


def test_rotated_rectangle_gives_its_axis_aligned_bounds():
    x0, y0, x1, y1 = rectangle_to_box({"x": 50, "y": 10, "width": 25, "height": 10, "rotation": 90}, 100, 100)
    assert (x0, y0, x1, y1) == pytest.approx((40.0, 10.0, 50.0, 35.0))


@pytest.mark.parametrize("value", [{"x": 10, "y": 10, "width": 0, "height": 5},
                                   {"x": 90, "y": 10, "width": 20, "height": 5},
                                   {"x": -3, "y": 10, "width": 20, "height": 5},
                                   {"x": 10, "y": 10, "width": "w", "height": 5}])
def test_bad_rectangles_are_refused(value):
    with pytest.raises(RegionError):
        rectangle_to_box(value, 100, 100)


# ------------------------------------------------------------------------------------------------ annotations
def test_parse_result_keeps_good_regions_and_skips_bad_ones():
    mask = blob(2)
    good = region_for("brush", "red_stripes", mask) + region_for("poly", "green_checker", mask) + \
        region_for("rect", "red_stripes", mask)
    unknown = region_for("brush", "unicorn", mask)
    wrong = region_for("brush", "red_stripes", mask)
    wrong[0]["original_width"] = 63  # RLE length no longer matches
    choice = {"from_name": "c", "to_name": "image", "type": "choices", "value": {"choices": ["x"]}}
    parsed, skipped = parse_result(good + unknown + wrong + [choice], CONFIG, (48, 64))
    regions = [region for _, region in parsed]
    assert [r.label for r in regions] == ["red_stripes", "green_checker", "red_stripes"]
    assert [item["type"] for item, _ in parsed] == ["brushlabels", "polygonlabels", "rectanglelabels"]
    assert (regions[0].mask == mask).all() and (regions[1].mask == mask).all()
    assert regions[2].box is not None and regions[2].mask is None
    assert len(skipped) == 2
    assert "unicorn" in skipped[0] and "encodes" in skipped[1]
    assert len(geometry_items(good + unknown + wrong + [choice])) == 5


def test_empty_or_classification_only_annotation_has_no_geometry():
    choice = {"from_name": "c", "to_name": "image", "type": "choices", "value": {"choices": ["x"]}}
    for result in ([], [choice], None, {"type": "brushlabels"}):
        assert geometry_items(result) == []
        assert parse_result(result, CONFIG, (48, 64)) == ([], [])


def test_brush_of_other_size_is_mapped_onto_the_loaded_image():
    mask = np.zeros((24, 32), bool)
    mask[4:12, 8:20] = True
    [(_, region)], _ = parse_result(region_for("brush", "red_stripes", mask), CONFIG, (48, 64))
    assert region.mask.shape == (48, 64)
    assert region.mask.sum() == mask.sum() * 4


def test_predicted_regions_validate_against_label_studio():
    mask = blob(3)
    bbox = (float(np.nonzero(mask)[1].min()), float(np.nonzero(mask)[0].min()), 10.0, 10.0)
    result = []
    for control in CONFIG.outputs:
        result += instance_regions(control, "red_stripes", mask, bbox, 0.9)
    assert [r["type"] for r in result] == ["brushlabels", "polygonlabels", "rectanglelabels"]
    assert len({r["id"] for r in result}) == 3
    for region in result:
        assert region["original_width"] == 64 and region["original_height"] == 48
        assert region["image_rotation"] == 0 and region["score"] == 0.9
    assert result[1]["value"]["closed"] is True
    assert LabelInterface(LABEL_CONFIG).validate_prediction({"result": result, "score": 0.9, "model_version": "v"})
