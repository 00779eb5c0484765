"""What is done to a registered AMI before its bake is complete, as the settings ask: its launch
permissions (and its snapshots' create-volume permissions for accounts), its deprecation time
and its deregistration protection. Checked before the bake acquires anything."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aminator_ec2.aws import call
from aminator_ec2.plugin import Ec2Settings
from aminator_ng.api import RequestError, parse_duration

log = logging.getLogger(__name__)

ACCOUNT = re.compile(r"\d{12}")
ORGANIZATION = re.compile(r"arn:aws[a-z-]*:organizations::\d{12}:organization/o-[a-z0-9]{10,32}")
UNIT = re.compile(
    r"arn:aws[a-z-]*:organizations::\d{12}:ou/o-[a-z0-9]{10,32}/ou-[a-z0-9]{4,32}-[a-z0-9]{8,32}"
)
SHARE_HINT = "--share-with takes a 12-digit account id, an organization ARN or an OU ARN"
#: EC2 deprecates at most ten years ahead.
LONGEST_DEPRECATION = timedelta(days=3650)


def parse_time(text: str, flag: str) -> datetime:
    """An ISO-8601 time; one without a zone is UTC."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise RequestError(
            f"{flag} {text!r} is not a time", hint="write an ISO-8601 time: 2027-06-30T00:00Z"
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Publishing:
    """The settings' sharing, deprecation and protection of a new AMI, checked."""

    accounts: tuple[str, ...] = ()
    organizations: tuple[str, ...] = ()
    units: tuple[str, ...] = ()
    public: bool = False
    deprecate_at: datetime | None = None
    protect: bool = False
    protect_cooldown: bool = False

    @classmethod
    def from_settings(cls, own: Ec2Settings, now: datetime) -> Publishing:
        accounts, organizations, units = [], [], []
        for target in own.share_with:
            if ACCOUNT.fullmatch(target):
                accounts.append(target)
            elif ORGANIZATION.fullmatch(target):
                organizations.append(target)
            elif UNIT.fullmatch(target):
                units.append(target)
            else:
                raise RequestError(f"--share-with {target!r} is not an account", hint=SHARE_HINT)
        if own.public and not own.allow_public:
            raise RequestError(
                "--public would let every AWS account launch the image",
                hint="set allow_public = true in [plugins.ec2] where public images are meant",
            )
        if own.deprecate_in and own.deprecate_at:
            raise RequestError(
                "--deprecate-in and --deprecate-at both set a deprecation time",
                hint="give one of them",
            )
        deprecate_at = None
        if own.deprecate_in:
            deprecate_at = now + parse_duration(own.deprecate_in, "--deprecate-in")
        elif own.deprecate_at:
            deprecate_at = parse_time(own.deprecate_at, "--deprecate-at")
            if deprecate_at <= now:
                raise RequestError(f"--deprecate-at {own.deprecate_at} is not in the future")
        if deprecate_at is not None and deprecate_at - now > LONGEST_DEPRECATION:
            raise RequestError("a deprecation time is at most ten years ahead")
        if own.protect_cooldown and not own.protect:
            raise RequestError("--protect-cooldown goes with --protect", hint="add --protect")
        return cls(
            tuple(accounts),
            tuple(organizations),
            tuple(units),
            own.public,
            deprecate_at,
            own.protect,
            own.protect_cooldown,
        )

    @property
    def shared(self) -> bool:
        return bool(self.accounts or self.organizations or self.units or self.public)

    def launch_permissions(self) -> list[dict[str, str]]:
        return [
            *({"UserId": account} for account in self.accounts),
            *({"OrganizationArn": arn} for arn in self.organizations),
            *({"OrganizationalUnitArn": arn} for arn in self.units),
            *([{"Group": "all"}] if self.public else []),
        ]

    def apply(self, ec2: Any, image_id: str, snapshot_ids: Sequence[str]) -> None:
        """Share, deprecate, then protect: a protected image could not be deregistered if a
        later call failed."""
        if self.shared:
            call(
                ec2.modify_image_attribute,
                image_id,
                ImageId=image_id,
                LaunchPermission={"Add": self.launch_permissions()},
            )
            log.info("launch permissions of %s: %s", image_id, self.launch_permissions())
        if self.accounts:
            # Accounts launch from the snapshot; organizations get it through the image.
            for snapshot_id in snapshot_ids:
                call(
                    ec2.modify_snapshot_attribute,
                    snapshot_id,
                    SnapshotId=snapshot_id,
                    Attribute="createVolumePermission",
                    OperationType="add",
                    UserIds=list(self.accounts),
                )
        if self.deprecate_at is not None:
            call(
                ec2.enable_image_deprecation,
                image_id,
                ImageId=image_id,
                DeprecateAt=self.deprecate_at,
            )
            log.info("%s is deprecated from %s", image_id, self.deprecate_at.isoformat())
        if self.protect:
            call(
                ec2.enable_image_deregistration_protection,
                image_id,
                ImageId=image_id,
                WithCooldown=self.protect_cooldown,
            )
            log.info("%s is protected from deregistration", image_id)
