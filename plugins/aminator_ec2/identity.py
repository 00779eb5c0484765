"""Who this bake host is on EC2: instance id, availability zone and region, from IMDSv2.

The instance metadata service is asked with a session token first (IMDSv2): a PUT to
``/latest/api/token``, then GETs that carry the token. The endpoint is the one boto3 users configure
(``AWS_EC2_METADATA_SERVICE_ENDPOINT``, ``ec2_metadata_service_endpoint`` in the profile, or the
IPv6 endpoint mode); ``AWS_EC2_METADATA_DISABLED=true``, ``AWS_EC2_METADATA_V1_DISABLED``,
``AWS_METADATA_SERVICE_TIMEOUT`` and ``AWS_METADATA_SERVICE_NUM_ATTEMPTS`` are honoured.
botocore's own ``IMDSFetcher`` offers these paths only through private methods, so the few
requests are made here with urllib, with short timeouts and a couple of attempts. Proxies are
never used: the service is link-local, and bake hosts often sit behind an ``http_proxy`` that
cannot reach it.
"""

from __future__ import annotations

import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aminator_ec2.aws import new_botocore_session
from aminator_ng.api import HostError

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://169.254.169.254/"
DEFAULT_ENDPOINT_IPV6 = "http://[fd00:ec2::254]/"
TOKEN_PATH = "latest/api/token"
TOKEN_TTL_SECONDS = "21600"
DEFAULT_TIMEOUT_S = 1.0
DEFAULT_ATTEMPTS = 2

NOT_ON_EC2_HINT = "run on an EC2 bake host, or use --cloud local"

#: A region name at the start of a zone name: ``us-west-2`` in ``us-west-2a``, in the local zone
#: ``us-west-2-lax-1a`` and in the Wavelength zone ``us-east-1-wl1-bos-wlz-1``.
_REGION_IN_ZONE = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d+")


@dataclass(frozen=True)
class InstanceIdentity:
    """The EC2 instance this process runs on."""

    instance_id: str
    availability_zone: str
    region: str


def region_of_zone(availability_zone: str) -> str:
    """The region an availability zone (or local or Wavelength zone) belongs to."""
    match = _REGION_IN_ZONE.match(availability_zone)
    if match is None:
        raise HostError(
            f"the instance metadata service gave an availability zone that names no region: "
            f"{availability_zone!r}"
        )
    return match.group(0)


def metadata_endpoint(session: Any = None) -> str:
    """The instance metadata endpoint boto3 would use (environment, profile, endpoint mode)."""
    botocore_session = session if session is not None else new_botocore_session()
    custom = botocore_session.get_config_variable("ec2_metadata_service_endpoint")
    if custom:
        return str(custom)
    mode = botocore_session.get_config_variable("ec2_metadata_service_endpoint_mode")
    return DEFAULT_ENDPOINT_IPV6 if str(mode or "").lower() == "ipv6" else DEFAULT_ENDPOINT


class _Metadata:
    """The few IMDS requests a bake needs, through an opener that never uses a proxy."""

    def __init__(self, endpoint: str, timeout_s: float, attempts: int, v1_allowed: bool) -> None:
        self.endpoint = endpoint if endpoint.endswith("/") else endpoint + "/"
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.v1_allowed = v1_allowed
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.token: str | None = None

    def not_on_ec2(self, reason: object) -> HostError:
        log.debug("instance metadata service at %s: %s", self.endpoint, reason)
        return HostError(
            f"not on EC2: the instance metadata service did not answer at {self.endpoint}",
            hint=NOT_ON_EC2_HINT,
        )

    def request(self, method: str, path: str, headers: Mapping[str, str]) -> tuple[int, str]:
        """The status and body of one request; HTTP errors are answers, not exceptions."""
        url = self.endpoint + path
        last_error: Exception | None = None
        for _attempt in range(self.attempts):
            request = urllib.request.Request(url, method=method, headers=dict(headers))
            try:
                with self.opener.open(request, timeout=self.timeout_s) as response:
                    return int(response.status), response.read().decode()
            except urllib.error.HTTPError as error:
                with error:
                    return int(error.code), error.read().decode(errors="replace")
            except (OSError, ValueError) as error:  # refused, unreachable, timed out, bad URL
                last_error = error
        raise self.not_on_ec2(last_error)

    def fetch_token(self) -> None:
        status, body = self.request(
            "PUT", TOKEN_PATH, {"X-aws-ec2-metadata-token-ttl-seconds": TOKEN_TTL_SECONDS}
        )
        if status == 200 and body:
            self.token = body
        elif status in (404, 405) and self.v1_allowed:
            # An endpoint without IMDSv2 (an old emulator): go on without a token, as botocore does.
            log.debug("IMDS token request answered %s: falling back to IMDSv1", status)
        elif status in (404, 405):
            raise HostError(
                f"the instance metadata service at {self.endpoint} gave no IMDSv2 token "
                f"(HTTP {status}) and IMDSv1 is disabled (ec2_metadata_v1_disabled)"
            )
        elif status == 403:
            raise HostError(
                f"the instance metadata service at {self.endpoint} refused a session token (403)",
                hint="enable the instance metadata service on this instance "
                "(aws ec2 modify-instance-metadata-options --http-endpoint enabled)",
            )
        else:
            raise self.not_on_ec2(f"token request answered HTTP {status}")

    def get(self, path: str, *, optional: bool = False) -> str | None:
        headers = {} if self.token is None else {"X-aws-ec2-metadata-token": self.token}
        status, body = self.request("GET", f"latest/meta-data/{path}", headers)
        if status == 200 and body.strip():
            return body.strip()
        if status == 404 and optional:
            return None
        if status == 401:
            raise HostError(
                f"the instance metadata service at {self.endpoint} requires IMDSv2 and rejected "
                "the session token",
                hint="in a container, raise the instance's metadata hop limit to 2 "
                "(aws ec2 modify-instance-metadata-options --http-put-response-hop-limit 2)",
            )
        raise HostError(
            f"the instance metadata service at {self.endpoint} did not give "
            f"meta-data/{path} (HTTP {status})"
        )


def _number(value: object, default: float) -> float:
    try:
        return float(str(value)) if value not in (None, "") else default
    except ValueError:
        return default


def instance_identity(
    *,
    endpoint: str | None = None,
    timeout_s: float | None = None,
    attempts: int | None = None,
    session: Any = None,
) -> InstanceIdentity:
    """This instance's id, availability zone and region, from the instance metadata service.

    ``endpoint``, ``timeout_s`` and ``attempts`` default to what boto3 is configured with (the
    environment and the profile of the botocore ``session``), else to the IMDS endpoint, 1 s and
    (at least) 2 attempts. Raises HostError (exit 2) off EC2, with the metadata service disabled,
    or when it answers without the paths a bake needs.
    """
    if os.environ.get("AWS_EC2_METADATA_DISABLED", "false").lower() == "true":
        raise HostError(
            "the instance metadata service is disabled (AWS_EC2_METADATA_DISABLED=true)",
            hint="unset AWS_EC2_METADATA_DISABLED on an EC2 bake host, or use --cloud local",
        )
    botocore_session = session if session is not None else new_botocore_session()
    if timeout_s is None:
        timeout_s = _number(
            botocore_session.get_config_variable("metadata_service_timeout"), DEFAULT_TIMEOUT_S
        )
    if attempts is None:
        # botocore's own default is a single attempt; a bake host gets at least two.
        configured = botocore_session.get_config_variable("metadata_service_num_attempts")
        attempts = max(DEFAULT_ATTEMPTS, int(_number(configured, DEFAULT_ATTEMPTS)))
    v1_disabled = botocore_session.get_config_variable("ec2_metadata_v1_disabled")
    metadata = _Metadata(
        endpoint if endpoint is not None else metadata_endpoint(botocore_session),
        timeout_s,
        attempts,
        v1_allowed=str(v1_disabled).lower() != "true",
    )
    metadata.fetch_token()
    instance_id = metadata.get("instance-id")
    availability_zone = metadata.get("placement/availability-zone")
    assert instance_id is not None and availability_zone is not None
    region = metadata.get("placement/region", optional=True) or region_of_zone(availability_zone)
    identity = InstanceIdentity(instance_id, availability_zone, region)
    log.debug("instance identity: %s", identity)
    return identity
