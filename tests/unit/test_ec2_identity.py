"""The EC2 plugin's instance identity, against a tiny local IMDSv2 server."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from aminator_ec2.identity import (
    InstanceIdentity,
    instance_identity,
    region_of_zone,
)
from aminator_ng.api import HostError

TOKEN = "AQAEAtoken-for-tests=="


@dataclass
class Imds:
    """What the fake metadata service serves, and what it was asked."""

    meta_data: dict[str, str] = field(
        default_factory=lambda: {
            "instance-id": "i-0123456789abcdef0",
            "placement/availability-zone": "eu-west-1b",
            "placement/region": "eu-west-1",
        }
    )
    token_status: int = 200
    accept_token: str = TOKEN
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    endpoint: str = ""


def handler_for(imds: Imds) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def reply(self, status: int, body: str = "") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PUT(self) -> None:
            imds.requests.append(("PUT", self.path, None))
            if self.path != "/latest/api/token":
                self.reply(404)
            elif not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                self.reply(400)
            elif imds.token_status != 200:
                self.reply(imds.token_status)
            else:
                self.reply(200, TOKEN)

        def do_GET(self) -> None:
            token = self.headers.get("X-aws-ec2-metadata-token")
            imds.requests.append(("GET", self.path, token))
            # IMDSv2 only (HttpTokens=required): a GET without a valid token is 401.
            if imds.token_status == 200 and token != imds.accept_token:
                self.reply(401)
                return
            key = self.path.removeprefix("/latest/meta-data/")
            if key in imds.meta_data:
                self.reply(200, imds.meta_data[key])
            else:
                self.reply(404)

    return Handler


@pytest.fixture(autouse=True)
def clean_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No operator profile, endpoint or proxy reaches these tests."""
    for name in (
        "AWS_PROFILE",
        "AWS_EC2_METADATA_DISABLED",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
        "AWS_EC2_METADATA_V1_DISABLED",
        "AWS_METADATA_SERVICE_TIMEOUT",
        "AWS_METADATA_SERVICE_NUM_ATTEMPTS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture
def imds(monkeypatch: pytest.MonkeyPatch) -> Iterator[Imds]:
    """A local IMDSv2 server, made the endpoint boto3 users configure."""
    state = Imds()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(state))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.endpoint = f"http://127.0.0.1:{server.server_address[1]}/"
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", state.endpoint)
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_identity_comes_from_imdsv2_with_a_token_first(imds: Imds) -> None:
    assert instance_identity() == InstanceIdentity("i-0123456789abcdef0", "eu-west-1b", "eu-west-1")
    assert imds.requests[0] == ("PUT", "/latest/api/token", None)
    assert all(token == TOKEN for method, _path, token in imds.requests if method == "GET")


def test_the_server_requires_the_token(imds: Imds) -> None:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as raised:
        opener.open(imds.endpoint + "latest/meta-data/instance-id", timeout=5)
    assert raised.value.code == 401
    raised.value.close()


def test_a_rejected_token_is_a_host_error_with_the_hop_limit_hint(imds: Imds) -> None:
    imds.accept_token = "another-token"
    with pytest.raises(HostError) as raised:
        instance_identity()
    assert raised.value.exit_code == 2
    assert "requires IMDSv2" in raised.value.message
    assert raised.value.hint is not None and "hop-limit" in raised.value.hint


def test_a_local_zone_belongs_to_its_parent_region(imds: Imds) -> None:
    imds.meta_data["placement/availability-zone"] = "us-west-2-lax-1a"
    del imds.meta_data["placement/region"]
    identity = instance_identity()
    assert identity.availability_zone == "us-west-2-lax-1a"
    assert identity.region == "us-west-2"


@pytest.mark.parametrize(
    ("zone", "region"),
    [
        ("us-east-1a", "us-east-1"),
        ("ap-southeast-2c", "ap-southeast-2"),
        ("us-gov-west-1b", "us-gov-west-1"),
        ("us-west-2-lax-1a", "us-west-2"),
        ("us-east-1-wl1-bos-wlz-1", "us-east-1"),
    ],
)
def test_region_of_zone(zone: str, region: str) -> None:
    assert region_of_zone(zone) == region


def test_off_ec2_is_a_host_error_naming_the_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}/"
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint)
    with pytest.raises(HostError) as raised:
        instance_identity()
    assert raised.value.exit_code == 2
    assert raised.value.message == (
        f"not on EC2: the instance metadata service did not answer at {endpoint}"
    )
    assert raised.value.hint == "run on an EC2 bake host, or use --cloud local"


def test_a_disabled_metadata_service_is_a_host_error(
    imds: Imds, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(HostError, match="AWS_EC2_METADATA_DISABLED"):
        instance_identity()
    assert imds.requests == []


def test_the_metadata_service_is_never_reached_through_a_proxy(
    imds: Imds, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead_proxy = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("http_proxy", dead_proxy)
    monkeypatch.setenv("HTTP_PROXY", dead_proxy)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert instance_identity().instance_id == "i-0123456789abcdef0"


def test_without_imdsv2_it_falls_back_to_v1_unless_v1_is_disabled(
    imds: Imds, monkeypatch: pytest.MonkeyPatch
) -> None:
    imds.token_status = 405
    assert instance_identity().region == "eu-west-1"
    monkeypatch.setenv("AWS_EC2_METADATA_V1_DISABLED", "true")
    with pytest.raises(HostError, match="IMDSv1 is disabled") as raised:
        instance_identity()
    assert raised.value.exit_code == 2


def test_the_session_token_is_never_logged(imds: Imds, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert instance_identity().instance_id == "i-0123456789abcdef0"
    imds.accept_token = "another-token"
    with pytest.raises(HostError) as raised:
        instance_identity()
    assert any("instance identity" in record.getMessage() for record in caplog.records)
    assert TOKEN not in caplog.text
    assert TOKEN not in f"{raised.value.message} {raised.value.hint}"
