"""docker-compose.yml keeps Label Studio's SSRF protections on and lets exactly one private address through (the
backend's), by replacing the default banned subnets with the same list minus that address. Check the mechanism on a
real Label Studio: the allowed address connects (URL check, webhook creation, /predict through the guarded HTTP
adapter) and a neighbouring address is still refused."""
from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from local_stack import APIError, BackendServer, LabelStudioAPI, LabelStudioServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
ALLOWED = "127.0.0.1"


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def banned_except(address: str) -> list[str]:
    """Label Studio's default banned subnets (core/utils/io.py validate_ip) with one address cut out, built the way
    docker-compose.yml's list was: the compose list with its backend address, re-derived for `address`."""
    env = compose()["services"]["label-studio"]["environment"]
    backend_ip = ipaddress.ip_address(compose()["services"]["ntt-backend"]["networks"]["ntt"]["ipv4_address"])
    subnets = [ipaddress.ip_network(s) for s in env["LABEL_STUDIO_USER_ADDITIONAL_BANNED_SUBNETS"].split(",")]
    # put the compose backend address back (collapse re-merges the pieces), then cut out `address`
    v4 = ipaddress.collapse_addresses([n for n in subnets if n.version == 4] + [ipaddress.ip_network(backend_ip)])
    v6 = [n for n in subnets if n.version == 6]
    target = ipaddress.ip_network(address)
    out = []
    for net in list(v4) + v6:
        if net.version == target.version and target.subnet_of(net):
            out += list(net.address_exclude(target))
        else:
            out.append(net)
    return [str(n) for n in out]


def test_compose_allowlist_matches_label_studio_defaults():
    env = compose()["services"]["label-studio"]["environment"]
    assert env["LABEL_STUDIO_ML_BLOCK_LOCAL_IP"] == "true" and env["LABEL_STUDIO_SSRF_PROTECTION_ENABLED"] == "true"
    assert env["LABEL_STUDIO_USE_DEFAULT_BANNED_SUBNETS"] == "false"
    listed = env["LABEL_STUDIO_USER_ADDITIONAL_BANNED_SUBNETS"].split(",")
    assert all(s == s.strip() for s in listed), "Label Studio does not strip spaces in this list"
    backend_ip = ipaddress.ip_address(compose()["services"]["ntt-backend"]["networks"]["ntt"]["ipv4_address"])
    subnet = ipaddress.ip_network(compose()["networks"]["ntt"]["ipam"]["config"][0]["subnet"])
    nets = [ipaddress.ip_network(s) for s in listed]
    assert backend_ip in subnet and not any(backend_ip in n for n in nets)
    # everything else Label Studio bans by default stays banned: the gateway, neighbours, loopback, metadata, ...
    for probe in [subnet.network_address + 1, backend_ip - 1, backend_ip + 1, "127.0.0.1", "10.0.0.1",
                  "172.17.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "::1", "fd00::1"]:
        ip = ipaddress.ip_address(probe)
        assert any(ip in n for n in nets if n.version == ip.version), f"{ip} is not banned"
    # and public addresses are not
    assert not any(ipaddress.ip_address("8.8.8.8") in n for n in nets if n.version == 4)


def test_allowlisted_backend_connects_with_protections_on(tmp_path: Path):
    banned = ",".join(banned_except(ALLOWED))
    server = LabelStudioServer(data_dir=tmp_path / "ls", files_root=tmp_path / "files", extra_env={
        "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "true",
        "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "true",
        "LABEL_STUDIO_USE_DEFAULT_BANNED_SUBNETS": "false",
        "LABEL_STUDIO_USER_ADDITIONAL_BANNED_SUBNETS": banned,
    })
    backend = None
    server.start(timeout=150.0)
    try:
        backend = BackendServer(model_dir=tmp_path / "models", log_path=tmp_path / "backend.log", env_overrides={
            "LABEL_STUDIO_URL": server.url, "NTT_CACHE_DIR": str(tmp_path / "cache")}).start(timeout=120.0)
        api = LabelStudioAPI(server.url, server.pat)
        project = api.create_project("ssrf allow-list", '<View><Image name="image" value="$image"/>'
                                     '<BrushLabels name="brush" toName="image"><Label value="a"/></BrushLabels></View>')
        # a neighbouring loopback address is refused at URL validation (nothing needs to listen there)
        with pytest.raises(APIError) as refused:
            api.connect_ml_backend(project["id"], backend.url.replace("127.0.0.1", "127.0.0.2"), title="blocked")
        assert refused.value.response.status_code == 403 and "reserved network address" in refused.value.response.text
        # the allowed address connects, gets its webhook (SSRF-checked) and is called through the guarded adapter
        ml = api.connect_ml_backend(project["id"], backend.url, title="allowed")
        assert ml["state"] == "CO", ml
        assert [h["url"] for h in api.list_webhooks(project["id"])] == [f"{backend.url}/webhook"]
        versions = api.ml_versions(ml["id"])
        assert versions.get("versions"), versions
    finally:
        if backend is not None:
            backend.stop()
        server.stop()
