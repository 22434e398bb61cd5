"""The project's labeling config → which controls receive predictions and which image they label.

Parsed with label-studio-sdk's `LabelInterface`, the library Label Studio itself uses. Supported:
BrushLabels, PolygonLabels and RectangleLabels (prediction outputs and reference inputs), KeyPointLabels and
`smart` RectangleLabels (interactive prompts). Everything else in the config (Choices, TextArea, ...) is ignored.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from label_studio_sdk.label_interface import LabelInterface

log = logging.getLogger(__name__)

# control tag → the result `type` Label Studio uses for its regions
OUTPUT_TAGS = {"BrushLabels": "brushlabels", "PolygonLabels": "polygonlabels", "RectangleLabels": "rectanglelabels"}
PROMPT_TAGS = {"KeyPointLabels": "keypointlabels", "RectangleLabels": "rectanglelabels"}
DETAIL_ORDER = ("BrushLabels", "PolygonLabels", "RectangleLabels")  # the most detailed region first
# a <TextArea name="ntt_note" toName="<image>"/> in the config gets a task-level note when a prediction has no region
# (Label Studio renders a region-less prediction exactly like no prediction at all)
NOTE_CONTROL = "ntt_note"
MAX_CONFIG_CHARS = 512 * 1024  # Label Studio's own templates are < 10 KB; the parse cache holds 64 of them at most


class LabelConfigError(ValueError):
    """A config this backend cannot serve; the message says what is missing."""


@dataclass(frozen=True)
class Control:
    name: str  # from_name in results
    tag: str  # "BrushLabels", ...
    type: str  # result type, "brushlabels", ...
    to_name: str  # the Image object it labels
    labels: tuple[str, ...]
    smart: bool = False  # offered as an auto-annotation (interactive) tool
    smart_only: bool = False  # only a prompt tool: gets no predictions


@dataclass(frozen=True)
class LabelConfig:
    xml: str
    image_name: str  # name of the <Image> object the supported controls label
    value_key: str  # task data key of that image ("image" for value="$image")
    controls: tuple[Control, ...]
    note: Control | None = None  # the TextArea named NOTE_CONTROL on that image, if any

    @property
    def outputs(self) -> tuple[Control, ...]:
        """Controls that receive predicted regions."""
        return tuple(c for c in self.controls if c.tag in OUTPUT_TAGS and not c.smart_only)

    @property
    def prompts(self) -> tuple[Control, ...]:
        return tuple(c for c in self.controls if c.tag in PROMPT_TAGS)

    @property
    def labels(self) -> frozenset[str]:
        """Labels a reference may carry: those of the region controls (keypoints are prompts, not references)."""
        return frozenset(label for c in self.controls if c.tag in OUTPUT_TAGS for label in c.labels)

    def control(self, name: str) -> Control | None:
        return next((c for c in self.controls if c.name == name), None)

    def mask_output(self) -> Control | None:
        """Where an interactive (SAM) mask goes: brush first, then polygon, then rectangle."""
        ranked = _most_detailed_first(self.controls)
        return ranked[0] if ranked else None

    def region_controls(self, label: str, fill: str = "one") -> tuple[Control, ...]:
        """The controls one predicted object of `label` is drawn in. "one": the most detailed control offering the
        label (brush, else polygon, else rectangle; the first in the config among equals), so that rejecting an
        object costs one deletion; "all": every output control offering it (a brush, a polygon and a box)."""
        offering = tuple(c for c in self.outputs if label in c.labels)
        return offering if fill == "all" else _most_detailed_first(offering)[:1]


def _most_detailed_first(controls: tuple[Control, ...]) -> tuple[Control, ...]:
    ranked = [c for c in controls if c.tag in DETAIL_ORDER]
    return tuple(sorted(ranked, key=lambda c: DETAIL_ORDER.index(c.tag)))  # stable: config order among equals


def _truthy(value: object) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def parse_label_config(xml: str) -> LabelConfig:
    """Raise LabelConfigError for unparsable XML or a config without a supported image control."""
    if xml is not None and not isinstance(xml, str):
        raise LabelConfigError(f"the label config must be XML text, got a {type(xml).__name__}")
    if xml and len(xml) > MAX_CONFIG_CHARS:
        raise LabelConfigError(f"the label config is {len(xml)} characters long; at most {MAX_CONFIG_CHARS} are "
                               "accepted")
    return _parse_cached(xml or "")


@functools.lru_cache(maxsize=64)
def _parse_cached(xml: str) -> LabelConfig:
    if not xml.strip():
        raise LabelConfigError("the label config is empty")
    try:
        interface = LabelInterface(xml)
    except Exception as exc:  # noqa: BLE001 - the SDK raises several unrelated types for bad XML
        raise LabelConfigError(f"the label config cannot be parsed: {exc}") from exc

    images = {obj.name: obj for obj in interface.objects if obj.tag == "Image"}
    found: list[Control] = []
    for control in interface.controls:
        if control.tag not in OUTPUT_TAGS and control.tag not in PROMPT_TAGS:
            continue
        targets = [name for name in (control.to_name or []) if name in images]
        if not targets:
            log.warning("label config: %s %r does not label an <Image>; ignored", control.tag, control.name)
            continue
        attr = control.attr or {}
        found.append(Control(control.name, control.tag, OUTPUT_TAGS.get(control.tag) or PROMPT_TAGS[control.tag],
                             targets[0], tuple(control.labels or ()), _truthy(attr.get("smart", "")),
                             _truthy(attr.get("smartOnly", ""))))

    outputs = [c for c in found if c.tag in OUTPUT_TAGS and not c.smart_only]
    if not outputs:
        tags = sorted({c.tag for c in interface.controls}) or ["none"]
        raise LabelConfigError(
            "the label config has no BrushLabels, PolygonLabels or RectangleLabels control on an <Image> "
            f"(found: {', '.join(tags)}); this backend predicts instance masks, boxes or polygons for those")
    image_name = outputs[0].to_name
    ignored = [c.name for c in found if c.to_name != image_name]
    if ignored:
        log.warning("label config: only image %r is served; controls %s label another image and are ignored",
                    image_name, ignored)
    value = str(images[image_name].value or "")
    if not value.startswith("$") or len(value) < 2:
        raise LabelConfigError(f"<Image name={image_name!r}> needs value=\"$key\" naming a task data field, "
                               f"got {value!r}")
    controls = tuple(c for c in found if c.to_name == image_name)
    for control in controls:
        if not control.labels:
            log.warning("label config: %s %r has no <Label> children", control.tag, control.name)
    note = next((Control(c.name, c.tag, "textarea", image_name, ()) for c in interface.controls
                 if c.tag == "TextArea" and c.name == NOTE_CONTROL and image_name in (c.to_name or [])), None)
    return LabelConfig(xml, image_name, value[1:], controls, note)


# a label whose name says a colour is drawn in it (red_stripes red); the others take these in turn
NAMED_COLOURS = {"red": "#e53935", "green": "#43a047", "blue": "#1e88e5", "yellow": "#fdd835", "purple": "#8e24aa",
                 "orange": "#fb8c00", "cyan": "#00acc1", "magenta": "#d81b60", "pink": "#f06292", "brown": "#6d4c41",
                 "grey": "#757575", "gray": "#757575", "black": "#212121", "white": "#fafafa"}
PALETTE = ("#1e88e5", "#e53935", "#43a047", "#fb8c00", "#8e24aa", "#00acc1", "#d81b60", "#fdd835")
CONTROL_NAMES = {"BrushLabels": "brush", "PolygonLabels": "poly", "RectangleLabels": "rect"}


def label_colour(name: str, index: int) -> str:
    words = name.lower().replace("-", "_").replace(" ", "_").split("_")
    return next((NAMED_COLOURS[w] for w in words if w in NAMED_COLOURS), PALETTE[index % len(PALETTE)])


def recommended_label_config(labels: list[str], tags: tuple[str, ...] = ("BrushLabels",), note: bool = True) -> str:
    """The demo's labeling config: one image, one BrushLabels control (one region per object, the most detailed), each
    label in the colour its name says, and the TextArea where the backend says when it found nothing (`note`).
    `tags` adds PolygonLabels and RectangleLabels controls (the end-to-end tests of every output; with
    NTT_REGION_CONTROLS=all each object fills all of them)."""
    from xml.sax.saxutils import quoteattr
    options = "".join(f"<Label value={quoteattr(name)} background={quoteattr(label_colour(name, i))}/>"
                      for i, name in enumerate(labels))
    controls = "".join(f'  <{tag} name="{CONTROL_NAMES[tag]}" toName="image">{options}</{tag}>\n' for tag in tags)
    above = (f'  <TextArea name="{NOTE_CONTROL}" toName="image" rows="1" maxSubmissions="1" '
             'placeholder="ntt-label writes here when it finds nothing in the image"/>\n') if note else ""
    return f'<View>\n{above}  <Image name="image" value="$image" zoom="true"/>\n{controls}</View>'
