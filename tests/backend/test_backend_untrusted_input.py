"""Parsers of untrusted input, unit by unit: URLs, IPv6 address forms, JSON nesting, brush RLE, Prometheus label values
and project ids (the attacks through the real routes run in tests/reliability)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from label_studio_sdk.converter import brush

from labelstudio_backend.labelstudio.brush_rle import BrushRleError, decode_brush_values
from labelstudio_backend.fetch.images import address_refusal
from labelstudio_backend.metrics import Metrics
from labelstudio_backend.labelstudio.ids import parse_project_id
from labelstudio_backend.labelstudio.regions import encode_brush
from labelstudio_backend.labelstudio.strict_json import JsonError, loads, nesting_depth
from labelstudio_backend.fetch.url_parts import MalformedUrl, join_url, split_url


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:99999/x.png", "http://x:abc/x.png"])
def test_malformed_urls_raise_malformed_url_only(url):
    with pytest.raises(MalformedUrl):
        split_url(url)
    with pytest.raises(MalformedUrl):
        join_url("http://ok.test/a.png", url)


def test_split_url_fills_the_default_port():
    assert split_url("https://Host.test/a?b=1").port == 443 and split_url("http://h:81/").port == 81
    assert split_url("https://Host.test/a").hostname == "host.test"


@pytest.mark.parametrize("address,refused", [
    ("::127.0.0.1", True), ("64:ff9b::a9fe:a9fe", True), ("2002:7f00:1::", True), ("::ffff:10.0.0.1", True),
    ("2002:808:808::", False), ("64:ff9b::808:808", False), ("::1", True), ("::", True), ("2606:4700::1111", False),
    # IPv4-translated (RFC 6145) and local-use NAT64 (RFC 8215) forms of loopback and the metadata address
    ("::ffff:0:7f00:1", True), ("::ffff:0:a9fe:a9fe", True), ("64:ff9b:1::7f00:1", True),
    ("64:ff9b:1::a9fe:a9fe", True), ("64:ff9b:1:7f00:0:100::", True), ("::ffff:0:808:808", False)])
def test_ipv6_forms_are_judged_by_their_ipv4(address, refused):
    assert (address_refusal(address) is not None) == refused


def test_nesting_depth_ignores_brackets_in_strings():
    assert nesting_depth(loads(b'{"a": "[[[{{{\\"[[", "b": [[1]]}')) == 3
    assert nesting_depth(json.loads("[" * 900 + "]" * 900)) == 900 and nesting_depth(12) == 0
    with pytest.raises(JsonError, match="nested too deeply"):
        loads(b"[" * 100_000)
    with pytest.raises(JsonError, match="nested 65 levels"):
        loads("[" * 65 + "]" * 65)
    assert loads("[" * 64 + "]" * 64)


@pytest.mark.parametrize("seed", [0, 1])
def test_bounded_decoder_matches_the_sdk(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((37, 53)) > 0.6
    mask[5:30, 10:40] = True
    rle = encode_brush(mask)
    assert np.array_equal(decode_brush_values(bytes(rle), mask.size * 4), brush.decode_rle(rle))


def test_bounded_decoder_refuses_wide_words_and_too_many_blocks():
    rle = encode_brush(np.random.default_rng(3).random((40, 40)) > 0.5)
    with pytest.raises(BrushRleError, match="blocks"):
        decode_brush_values(bytes(rle), 40 * 40 * 4, max_blocks=100)
    with pytest.raises(BrushRleError, match="encodes"):
        decode_brush_values(bytes(rle), 41 * 40 * 4)
    header = format(16, "032b") + format(15, "05b") + format(15, "04b") * 4 + "1" + "00" + format(15, "016b")
    bits = header + format(300, "016b")
    bits += "0" * (-len(bits) % 8)
    with pytest.raises(BrushRleError, match="16-bit words"):
        decode_brush_values(int(bits, 2).to_bytes(len(bits) // 8, "big"), 16)


def test_prometheus_label_values_are_escaped():
    gauges = {"projects": [{"project": 4, "revision": 1, "references": {'a"b\\c\nd': 2}}]}
    text = Metrics().prometheus(gauges)
    assert 'ntt_references{label="a\\"b\\\\c\\nd",project="4"} 2.0' in text
    assert all(line.startswith(("#", "ntt_")) for line in text.splitlines() if line)  # no forged line


@pytest.mark.parametrize("value", ["١٢", "١٢.1795614847", "٤"])
def test_unicode_digit_project_ids_are_refused(value):
    with pytest.raises(ValueError):
        parse_project_id(value)
