import pytest

from labelstudio_backend.labelstudio.label_config import LabelConfigError, parse_label_config, recommended_label_config
from labelstudio_backend.settings import Settings, SettingsError

from support.backend_helpers import LABEL_CONFIG, sample


def config(body: str, image: str = '<Image name="img" value="$url"/>') -> str:
    return f"<View>{image}{body}</View>"


@pytest.mark.parametrize("tag,kind", [("BrushLabels", "brushlabels"), ("PolygonLabels", "polygonlabels"),
                                      ("RectangleLabels", "rectanglelabels")])
def test_each_output_tag_alone(tag, kind):
    parsed = parse_label_config(config(f'<{tag} name="c" toName="img"><Label value="a"/><Label value="b"/></{tag}>'))
    (control,) = parsed.outputs
    assert (control.name, control.tag, control.type, control.to_name) == ("c", tag, kind, "img")
    assert control.labels == ("a", "b")
    assert parsed.image_name == "img" and parsed.value_key == "url"
    assert parsed.labels == {"a", "b"}


def test_combination_and_interactive_tools():
    parsed = parse_label_config(LABEL_CONFIG)
    assert [c.name for c in parsed.outputs] == ["brush", "poly", "rect"]
    assert [c.name for c in parsed.prompts] == ["rect", "kp"]
    assert parsed.control("kp").smart and not parsed.control("brush").smart
    assert parsed.mask_output().name == "brush"
    assert parsed.labels == {"red_stripes", "green_checker"}  # keypoint labels are prompts, not references


def test_mask_output_prefers_brush_then_polygon_then_rectangle():
    poly_rect = config('<RectangleLabels name="r" toName="img"><Label value="a"/></RectangleLabels>'
                       '<PolygonLabels name="p" toName="img"><Label value="a"/></PolygonLabels>')
    assert parse_label_config(poly_rect).mask_output().name == "p"
    rect = config('<RectangleLabels name="r" toName="img"><Label value="a"/></RectangleLabels>')
    assert parse_label_config(rect).mask_output().name == "r"


def test_smart_only_rectangle_is_a_prompt_not_an_output():
    parsed = parse_label_config(config(
        '<BrushLabels name="b" toName="img"><Label value="a"/></BrushLabels>'
        '<RectangleLabels name="r" toName="img" smart="true" smartOnly="true"><Label value="a"/></RectangleLabels>'))
    assert [c.name for c in parsed.outputs] == ["b"]
    assert [c.name for c in parsed.prompts] == ["r"]


def test_other_controls_are_ignored():
    parsed = parse_label_config(config(
        '<Choices name="q" toName="img"><Choice value="ok"/></Choices>'
        '<PolygonLabels name="p" toName="img"><Label value="a"/></PolygonLabels>'))
    assert [c.name for c in parsed.controls] == ["p"]


@pytest.mark.parametrize("xml", [
    config('<Choices name="q" toName="img"><Choice value="ok"/></Choices>'),
    config('<KeyPointLabels name="k" toName="img" smart="true"><Label value="a"/></KeyPointLabels>'),
    '<View><Text name="t" value="$text"/><Labels name="l" toName="t"><Label value="a"/></Labels></View>',
])
def test_config_without_supported_control_is_a_clear_error(xml):
    with pytest.raises(LabelConfigError, match="no BrushLabels, PolygonLabels or RectangleLabels"):
        parse_label_config(xml)


@pytest.mark.parametrize("xml", ["", "   ", "<View><Image name='img' value='$u'/>", "not xml"])
def test_empty_or_broken_xml_is_a_clear_error(xml):
    with pytest.raises(LabelConfigError):
        parse_label_config(xml)


def test_two_images_serve_the_first_labelled_one():
    parsed = parse_label_config(
        '<View><Image name="a" value="$left"/><Image name="b" value="$right"/>'
        '<BrushLabels name="bb" toName="b"><Label value="x"/></BrushLabels>'
        '<PolygonLabels name="pa" toName="a"><Label value="x"/></PolygonLabels></View>')
    assert parsed.image_name == "b" and parsed.value_key == "right"
    assert [c.name for c in parsed.controls] == ["bb"]


def _config(*tags: str) -> str:
    return recommended_label_config(["red_stripes", "blue_dots"], tags)


def test_one_region_per_object_in_the_most_detailed_control_unless_all_are_asked_for():
    every = parse_label_config(_config("RectangleLabels", "PolygonLabels", "BrushLabels"))
    assert [c.tag for c in every.region_controls("red_stripes")] == ["BrushLabels"]
    assert [c.tag for c in every.region_controls("red_stripes", "all")] == ["RectangleLabels", "PolygonLabels",
                                                                            "BrushLabels"]
    assert [c.tag for c in parse_label_config(_config("RectangleLabels", "PolygonLabels")).region_controls(
        "blue_dots")] == ["PolygonLabels"]
    assert [c.tag for c in parse_label_config(_config("RectangleLabels")).region_controls("blue_dots")] == \
        ["RectangleLabels"]
    assert every.region_controls("not a label") == ()
    # a label only the box offers is drawn there, even though a brush control exists
    xml = ('<View><Image name="image" value="$image"/><BrushLabels name="brush" toName="image"><Label value="a"/>'
           '</BrushLabels><RectangleLabels name="rect" toName="image"><Label value="b"/></RectangleLabels></View>')
    assert [c.name for c in parse_label_config(xml).region_controls("b")] == ["rect"]


def test_the_demo_config_draws_each_label_in_the_colour_its_name_says():
    xml = recommended_label_config(["red_stripes", "blue_dots", "green_checker", "thing"])
    assert xml.count("<BrushLabels") == 1 and "PolygonLabels" not in xml and "RectangleLabels" not in xml
    assert 'value="red_stripes" background="#e53935"' in xml and 'value="blue_dots" background="#1e88e5"' in xml
    assert 'value="green_checker" background="#43a047"' in xml and 'value="thing" background=' in xml


def test_a_bad_region_controls_value_is_refused(client):
    body = {**sample("setup_from_LS"), "extra_params": {"region_controls": "some"}}
    response = client.post("/setup", json=body)
    assert response.status_code == 400 and "region_controls" in response.json["error"]
    with pytest.raises(SettingsError, match="NTT_REGION_CONTROLS"):
        Settings.from_env({"NTT_REGION_CONTROLS": "both"})


def test_the_memory_length_per_class_defaults_to_the_methods_30_and_can_be_lifted():
    from labelstudio_backend.settings import Settings, SettingsError

    assert Settings.from_env({}).engine_config().max_references_per_class == 30
    assert Settings.from_env({"NTT_MAX_REFERENCES_PER_CLASS": "none"}).engine_config().max_references_per_class is None
    assert Settings.from_env({"NTT_MAX_REFERENCES_PER_CLASS": "0"}).engine_config().max_references_per_class is None
    latest = Settings.from_env({"NTT_MAX_REFERENCES_PER_CLASS": "5", "NTT_KEEP_REFERENCES": "latest"}).engine_config()
    assert (latest.max_references_per_class, latest.keep_references) == (5, "latest")
    for bad in ({"NTT_MAX_REFERENCES_PER_CLASS": "-2"}, {"NTT_KEEP_REFERENCES": "random"}):
        with pytest.raises(SettingsError):
            Settings.from_env(bad)
