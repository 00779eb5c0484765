"""``--dry-run`` on ec2: EC2 is asked, with DryRun=True, whether the bake host may make the calls
a bake makes that create something (CreateVolume, RegisterImage, CopyImage in each region).
EC2 answers DryRunOperation when it would have carried a call out and UnauthorizedOperation when
the host's policy refuses it; nothing is made either way. The calls that act on what a bake made
(attach, snapshot, share, deprecate, protect) cannot be asked before it exists."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import botocore.exceptions  # type: ignore[import-untyped]  # botocore ships no types

from aminator_ec2.aws import aws_error, error_code
from aminator_ng.api import HostError

log = logging.getLogger(__name__)

ALLOWED = "DryRunOperation"
REFUSED = ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException")


@dataclass(frozen=True)
class AskedCall:
    """One call a bake would make, asked with DryRun=True."""

    action: str
    region: str
    operation: Callable[..., Any]
    parameters: Mapping[str, Any]


def check_permissions(calls: list[AskedCall]) -> list[str]:
    """Ask each call; the ``ec2:Action in REGION`` of each one EC2 would allow. Raises HostError
    (exit 2) naming the first one refused."""
    allowed: list[str] = []
    for asked in calls:
        label = f"ec2:{asked.action} in {asked.region}"
        try:
            asked.operation(**asked.parameters, DryRun=True)
        except botocore.exceptions.ClientError as error:
            code = error_code(error)
            if code == ALLOWED:
                log.info("dry run: %s would be allowed", label)
                allowed.append(label)
                continue
            if code in REFUSED:
                raise HostError(
                    f"the bake host may not {label}: {error.response['Error'].get('Message', '')}",
                    hint="give the bake host's role the policy of docs/ec2-iam-policy.json "
                    "(docs/ec2.md, The IAM policy)",
                ) from error
            raise aws_error(error, asked.action, "(dry run)") from error
        raise HostError(
            f"{label} answered a dry run as if it had been carried out",
            hint="check AWS_ENDPOINT_URL: the endpoint does not honour DryRun",
        )
    return allowed
