"""A small evaluator of IAM identity policies, enough to judge docs/ec2-iam-policy.json against
the EC2 and SSM calls recorded by tests/ec2moto.py (moto does not evaluate IAM), and the S3
object calls that store SBOMs.

Each call becomes the authorizations EC2 asks of IAM for it: one per resource the call touches,
with the request's condition keys (``aws:RequestTag/KEY`` and ``aws:TagKeys`` of the tags it
sends) and the resource's own (``aws:ResourceTag/KEY``, from the tags it was created or tagged
with, or was described with); a call that tags at creation also asks ``ec2:CreateTags`` on the new
resource, with ``ec2:CreateAction`` naming the call. A call is allowed when each of its
authorizations matches an Allow statement (action, resource pattern and every condition) and no
Deny. Which resources an action is authorized on follows the EC2 Service Authorization Reference;
an action not modelled here, or a policy element or condition operator not understood, is an
error, so nothing passes unjudged. The policy's ``SBOM_BUCKET`` stands for the operator's bucket,
which here is the tests' own, ``TEST_SBOM_BUCKET``.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.ec2moto import REGION, Call

ACCOUNT = "123456789012"  # moto's account for any unknown access key
#: What the documented policy's placeholders stand for in the tests.
TEST_SBOM_BUCKET = "aminator-ng-test-sboms"
PLACEHOLDERS = {"SBOM_BUCKET": TEST_SBOM_BUCKET}
#: Condition keys to their values: every key is multivalued here, most hold one value.
Context = Mapping[str, tuple[str, ...]]


class NotModelled(Exception):
    """The evaluator does not know how to judge this call or this policy element."""


@dataclass(frozen=True)
class Authorization:
    """One question to IAM: may ``action`` be done on ``resource`` in this ``context``?"""

    action: str
    resource: str
    context: Context

    def __str__(self) -> str:
        keys = ", ".join(
            f"{key}={'|'.join(values)}"
            for key, values in sorted(self.context.items())
            if not key.startswith("ec2:resourcetag/")  # the same as aws:ResourceTag
        )
        return f"{self.action} on {self.resource} [{keys}]"


def _as_list(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _glob(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    """IAM's wildcards: ``*`` any run of characters, ``?`` any one; nothing else is special."""
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.IGNORECASE if ignore_case else 0)


def _key(name: str) -> str:
    """Condition key names are case-insensitive; a tag key after the ``/`` is not."""
    prefix, slash, tag = name.partition("/")
    return prefix.lower() + slash + tag


_MATCHERS: dict[str, tuple[Callable[[str, str], bool], bool]] = {
    "StringEquals": (lambda value, wanted: value == wanted, False),
    "StringNotEquals": (lambda value, wanted: value == wanted, True),
    "StringLike": (lambda value, wanted: bool(_glob(wanted).fullmatch(value)), False),
    "StringNotLike": (lambda value, wanted: bool(_glob(wanted).fullmatch(value)), True),
    "Bool": (lambda value, wanted: value.lower() == wanted.lower(), False),
}


def condition_holds(operator: str, key: str, wanted: Sequence[str], context: Context) -> bool:
    """One key of one condition operator, as IAM evaluates it."""
    qualifier, _, base = operator.rpartition(":")
    present = context.get(_key(key))
    if base == "Null":
        if qualifier or len(wanted) != 1 or wanted[0] not in ("true", "false"):
            raise NotModelled(f"condition {operator} {key}: {wanted}")
        return (present is None) == (wanted[0] == "true")
    if base not in _MATCHERS or qualifier not in ("", "ForAllValues", "ForAnyValue"):
        raise NotModelled(f"condition operator {operator}")
    matches, negated = _MATCHERS[base]

    def holds_for(value: str) -> bool:
        hit = any(matches(value, pattern) for pattern in wanted)
        return not hit if negated else hit

    values = present or ()
    if qualifier == "ForAllValues":
        return all(holds_for(value) for value in values)
    if qualifier == "ForAnyValue":
        return any(holds_for(value) for value in values)
    if present is None:
        return negated  # a negated operator holds for a key that is absent
    if len(present) != 1:
        raise NotModelled(f"{operator} on the multivalued key {key}: qualify it")
    return holds_for(present[0])


@dataclass(frozen=True)
class Statement:
    sid: str
    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    conditions: Mapping[str, Mapping[str, tuple[str, ...]]]

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Statement:
        unknown = set(raw) - {"Sid", "Effect", "Action", "Resource", "Condition"}
        if unknown or raw.get("Effect") not in ("Allow", "Deny"):
            raise NotModelled(f"statement {raw.get('Sid')}: {sorted(unknown)} {raw.get('Effect')}")
        conditions = {
            operator: {key: tuple(_as_list(values)) for key, values in keys.items()}
            for operator, keys in raw.get("Condition", {}).items()
        }
        return cls(
            sid=str(raw.get("Sid", "")),
            effect=str(raw["Effect"]),
            actions=tuple(_as_list(raw["Action"])),
            resources=tuple(_as_list(raw["Resource"])),
            conditions=conditions,
        )

    def applies(self, authorization: Authorization) -> bool:
        if not any(
            _glob(action, ignore_case=True).fullmatch(authorization.action)
            for action in self.actions
        ):
            return False
        if not self.covers(authorization.resource):
            return False
        return all(
            condition_holds(operator, key, wanted, authorization.context)
            for operator, keys in self.conditions.items()
            for key, wanted in keys.items()
        )

    def covers(self, resource: str) -> bool:
        return any(_glob(pattern).fullmatch(resource) for pattern in self.resources)

    def condition_keys(self) -> set[str]:
        return {key for keys in self.conditions.values() for key in keys}


@dataclass(frozen=True)
class Policy:
    statements: tuple[Statement, ...]

    @classmethod
    def load(cls, path: Path) -> Policy:
        text = path.read_text()
        for placeholder, value in PLACEHOLDERS.items():
            text = text.replace(placeholder, value)
        document = json.loads(text)
        return cls(tuple(Statement.parse(raw) for raw in document["Statement"]))

    def allows(self, authorization: Authorization) -> bool:
        applying = [s for s in self.statements if s.applies(authorization)]
        return any(s.effect == "Allow" for s in applying) and all(
            s.effect == "Allow" for s in applying
        )

    def granting(self, action: str) -> list[Statement]:
        """The Allow statements whose actions include ``action``."""
        return [
            statement
            for statement in self.statements
            if statement.effect == "Allow"
            and any(_glob(a, ignore_case=True).fullmatch(action) for a in statement.actions)
        ]


# EC2's side: which resources a call is authorized on, and what tags they carry.

_ARN_OF_PREFIX = {
    "vol-": f"arn:aws:ec2:{REGION}:{ACCOUNT}:volume/",
    "snap-": f"arn:aws:ec2:{REGION}::snapshot/",
    "ami-": f"arn:aws:ec2:{REGION}::image/",
    "i-": f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/",
}
#: The calls that create a resource: the type they create and where its id is in the answer.
_CREATES = {
    "CreateVolume": ("volume", "vol-", "volumeId"),
    "CreateSnapshot": ("snapshot", "snap-", "snapshotId"),
    "RegisterImage": ("image", "ami-", "imageId"),
    "CopyImage": ("image", "ami-", "imageId"),
}
#: The calls that act on one existing resource, and the parameter that names it.
_ACTS_ON = {
    "DeleteVolume": "VolumeId",
    "DeleteSnapshot": "SnapshotId",
    "DeregisterImage": "ImageId",
    "ModifyImageAttribute": "ImageId",
    "ModifySnapshotAttribute": "SnapshotId",
    "EnableImageDeprecation": "ImageId",
    "EnableImageDeregistrationProtection": "ImageId",
    "DisableImageDeregistrationProtection": "ImageId",
}
#: The S3 calls on one object (its bucket and key in ``Bucket`` and ``Key``).
_S3_OBJECT_ACTIONS = {"PutObject", "DeleteObject"}
_READ_ONLY = {
    "DescribeImageAttribute",
    "DescribeImages",
    "DescribeInstances",
    "DescribeSnapshots",
    "DescribeVolumes",
    "GetImageBlockPublicAccessState",
}
#: The lists of resources in EC2's describe answers, and the id element of their items.
_DESCRIBED = {
    "volumeSet": "volumeId",
    "snapshotSet": "snapshotId",
    "imagesSet": "imageId",
    "instancesSet": "instanceId",
}


#: What EC2 asks of KMS, in the caller's name, to make an encrypted volume (the EBS User Guide's
#: "permissions for IAM users" of EBS encryption); ``kms:ViaService`` names EC2 in each.
EBS_KMS_ACTIONS = (
    "kms:CreateGrant",
    "kms:Decrypt",
    "kms:DescribeKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
)
#: The key EC2 encrypts with when no KmsKeyId is given (the account's default may be another).
DEFAULT_EBS_KEY = "alias/aws/ebs"


def kms_key_arn(key: str) -> str:
    """The ARN IAM judges a key by; an alias stands for the key it names."""
    return key if key.startswith("arn:") else f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key}"


def ebs_kms_authorizations(params: Mapping[str, Any]) -> list[Authorization]:
    """The KMS authorizations an encrypted CreateVolume makes EC2 ask for."""
    if not (params.get("Encrypted") or params.get("KmsKeyId")):
        return []
    key = kms_key_arn(str(params.get("KmsKeyId") or DEFAULT_EBS_KEY))
    through_ec2 = {"kms:viaservice": (f"ec2.{REGION}.amazonaws.com",)}
    grant = {**through_ec2, "kms:grantisforawsresource": ("true",)}
    return [
        Authorization(action, key, grant if action == "kms:CreateGrant" else through_ec2)
        for action in EBS_KMS_ACTIONS
    ]


def arn(resource_id: str) -> str:
    for prefix, base in _ARN_OF_PREFIX.items():
        if resource_id.startswith(prefix):
            return base + resource_id
    raise NotModelled(f"the ARN of {resource_id}")


def _tag_dict(tags: Iterable[Mapping[str, str]]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in tags}


def _request_tags(params: Mapping[str, Any]) -> dict[str, str]:
    """Every tag a request sends: in its TagSpecifications (create calls) or Tags (CreateTags)."""
    tags = _tag_dict(params.get("Tags", ()))
    for spec in params.get("TagSpecifications", ()):
        tags.update(_tag_dict(spec.get("Tags", ())))
    return tags


def _local(element: ElementTree.Element) -> str:
    return element.tag.rpartition("}")[2]


def described_tags(answer: str) -> dict[str, dict[str, str]]:
    """Resource id -> tags, for each resource an EC2 answer shows with its tag set."""
    try:
        root = ElementTree.fromstring(answer)
    except ElementTree.ParseError:
        return {}
    found: dict[str, dict[str, str]] = {}
    for container in root.iter():
        id_element = _DESCRIBED.get(_local(container))
        for item in container if id_element else ():
            children = {_local(child): child for child in item}
            resource_id = children[id_element].text if id_element in children else None
            if resource_id:
                found[resource_id] = {
                    fields.get("key", ""): fields.get("value", "")
                    for tag in children.get("tagSet", ())
                    for fields in [{_local(child): child.text or "" for child in tag}]
                }
    return found


def image_snapshots(answer: str) -> list[tuple[str, str]]:
    """(image id, snapshot id) for each EBS mapping of each image an EC2 answer describes."""
    try:
        root = ElementTree.fromstring(answer)
    except ElementTree.ParseError:
        return []
    pairs: list[tuple[str, str]] = []
    for container in root.iter():
        if _local(container) != "imagesSet":
            continue
        for item in container:
            image_id = next((c.text for c in item if _local(c) == "imageId"), None)
            for element in item.iter():
                if _local(element) == "snapshotId" and image_id and element.text:
                    pairs.append((image_id, element.text))
    return pairs


@dataclass(frozen=True)
class Verdict:
    call: Call
    allowed: bool
    reason: str


@dataclass
class Evaluator:
    """Judges calls in order, keeping the tags of every resource they created, tagged or saw."""

    policy: Policy
    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    #: The snapshot tags a CopyImage asked for, by the copy's id: its snapshots get them, and
    #: are known once an answer shows the copy's mappings.
    copy_snapshot_tags: dict[str, dict[str, str]] = field(default_factory=dict)

    def authorizations(self, call: Call) -> list[Authorization]:
        """What IAM is asked for ``call``; NotModelled for a call this evaluator cannot judge."""
        action = f"{call.service}:{call.action}"
        params = call.params
        request_tags = _request_tags(params)
        request: dict[str, tuple[str, ...]] = {
            _key(f"aws:RequestTag/{k}"): (v,) for k, v in request_tags.items()
        }
        if request_tags:
            request["aws:tagkeys"] = tuple(request_tags)

        def on(resource_id: str) -> Authorization:
            own = {
                _key(f"{prefix}:ResourceTag/{k}"): (v,)
                for k, v in self.tags.get(resource_id, {}).items()
                for prefix in ("aws", "ec2")
            }
            return Authorization(action, arn(resource_id), {**request, **own})

        if call.service == "ssm" and call.action == "GetParameter":
            name = str(params["Name"]).lstrip("/")
            return [Authorization(action, f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/{name}", {})]
        if call.service == "s3" and call.action in _S3_OBJECT_ACTIONS:
            return [Authorization(action, f"arn:aws:s3:::{params['Bucket']}/{params['Key']}", {})]
        if call.service != "ec2":
            raise NotModelled(action)
        if call.action in _READ_ONLY:
            return [Authorization(action, "*", request)]
        if call.action in _CREATES:
            new = self._created_id(call) or f"{_CREATES[call.action][1]}new"
            sources: list[str] = []
            if call.action == "CreateVolume" and params.get("SnapshotId"):
                sources = [params["SnapshotId"]]
            elif call.action == "CreateSnapshot":
                sources = [params["VolumeId"]]
            elif call.action == "RegisterImage":
                sources = [
                    mapping["Ebs"]["SnapshotId"]
                    for mapping in params.get("BlockDeviceMappings", ())
                    if mapping.get("Ebs", {}).get("SnapshotId")
                ]
            elif call.action == "CopyImage":
                sources = [params["SourceImageId"]]
            asked = [Authorization(action, arn(new), request), *map(on, sources)]
            if call.action in ("CreateVolume", "CopyImage"):
                asked += ebs_kms_authorizations(params)
            if request_tags:
                tagging = {**request, "ec2:createaction": (call.action,)}
                asked.append(Authorization("ec2:CreateTags", arn(new), tagging))
                if call.action == "CopyImage":  # the copy's snapshots are tagged at creation too
                    asked.append(Authorization("ec2:CreateTags", arn("snap-new"), tagging))
            return asked
        if call.action in ("AttachVolume", "DetachVolume"):
            return [on(params["VolumeId"]), on(params["InstanceId"])]
        if call.action in _ACTS_ON:
            return [on(params[_ACTS_ON[call.action]])]
        if call.action == "CreateTags":
            return [on(resource_id) for resource_id in params["Resources"]]
        raise NotModelled(action)

    def judge(self, call: Call) -> Verdict:
        refused = [a for a in self.authorizations(call) if not self.policy.allows(a)]
        reason = "; ".join(f"refused {a}" for a in refused) or "allowed"
        return Verdict(call, not refused, reason)

    def learn(self, call: Call) -> None:
        """What a call carried out changed, or showed, of the resources' tags."""
        if not 200 <= call.status < 300:
            return
        for resource_id, tags in described_tags(call.answer).items():
            self.tags[resource_id] = tags
        if call.action in _CREATES and (new := self._created_id(call)):
            resource_type = _CREATES[call.action][0]
            self.tags[new] = {
                tag["Key"]: tag["Value"]
                for spec in call.params.get("TagSpecifications", ())
                if spec.get("ResourceType") == resource_type
                for tag in spec.get("Tags", ())
            }
        if call.action == "CopyImage" and (new := self._created_id(call)):
            self.copy_snapshot_tags[new] = {
                tag["Key"]: tag["Value"]
                for spec in call.params.get("TagSpecifications", ())
                if spec.get("ResourceType") == "snapshot"
                for tag in spec.get("Tags", ())
            }
        for image_id, snapshot_id in image_snapshots(call.answer):
            if image_id in self.copy_snapshot_tags:
                self.tags.setdefault(snapshot_id, self.copy_snapshot_tags[image_id])
        if call.action == "CreateTags":
            for resource_id in call.params["Resources"]:
                self.tags.setdefault(resource_id, {}).update(_request_tags(call.params))

    def run(self, calls: Iterable[Call], judged: Callable[[Call], bool]) -> list[Verdict]:
        """Verdicts on the ``judged`` calls, in order. The others are the world they act in: what
        they did is learnt unjudged; a judged call is learnt only if the policy allowed it (a
        refused call would have changed nothing)."""
        verdicts: list[Verdict] = []
        for call in calls:
            if judged(call):
                verdict = self.judge(call)
                verdicts.append(verdict)
                if not verdict.allowed:
                    continue
            self.learn(call)
        return verdicts

    @staticmethod
    def _created_id(call: Call) -> str | None:
        _, prefix, element = _CREATES[call.action]
        match = re.search(rf"<{element}>({prefix}[0-9a-f]+)</{element}>", call.answer)
        return match.group(1) if match else None
