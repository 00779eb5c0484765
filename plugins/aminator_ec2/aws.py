"""AWS calls: sessions whose libraries stay quiet, one log line per call, and failures as the
project's errors, each naming the operation and what it was about.

At DEBUG, botocore, boto3, urllib3 and s3transfer log signed headers (``Authorization``, the
session token of an instance profile) and whole request and response bodies. Their loggers are
capped at WARNING before any session is made, and each client the plugin makes logs a line of
its own per call instead: the operation, the resource ids in the request and the answer, the
HTTP status, the request id and, on failure, the error code. Nothing else of a call is logged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import boto3  # type: ignore[import-untyped]  # boto3 ships no types
import botocore.exceptions  # type: ignore[import-untyped]  # botocore ships no types
import botocore.session  # type: ignore[import-untyped]

from aminator_ng.api import AminatorError, CloudError, HostError

log = logging.getLogger(__name__)

AWS_ERRORS = (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError)

#: The AWS libraries' loggers, never let below WARNING.
AWS_LIBRARY_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer")
#: Request and answer members whose values name the resources a call is about.
_ID_MEMBERS = frozenset(
    {
        "ImageId",
        "ImageIds",
        "InstanceId",
        "InstanceIds",
        "Resources",
        "SnapshotId",
        "SnapshotIds",
        "VolumeId",
        "VolumeIds",
    }
)
#: A volume, snapshot, image or instance id; any other value under those members is not logged.
_RESOURCE_ID = re.compile(r"(?:ami|i|snap|vol)-[0-9a-f]+")
#: A describe call may answer with hundreds of images: the line names the first few.
MAX_LOGGED_IDS = 8
#: Where a call's name and request ids wait in botocore's request context for the answer.
_CONTEXT_KEY = "aminator_ec2.call"


def quiet_aws_libraries() -> None:
    """Cap the AWS libraries' loggers (and any child given a level of its own) at WARNING."""
    children = tuple(f"{library}." for library in AWS_LIBRARY_LOGGERS)
    for name, child in list(logging.root.manager.loggerDict.items()):
        if (
            isinstance(child, logging.Logger)
            and name.startswith(children)
            and logging.NOTSET < child.level < logging.WARNING
        ):
            child.setLevel(logging.WARNING)
    for library in AWS_LIBRARY_LOGGERS:
        logger = logging.getLogger(library)
        if logger.level < logging.WARNING:  # NOTSET too: it would inherit the root's DEBUG
            logger.setLevel(logging.WARNING)


def new_boto3_session() -> Any:
    """A new boto3 session, made after the AWS libraries' loggers are capped."""
    quiet_aws_libraries()
    return boto3.session.Session()


def new_botocore_session() -> Any:
    """A new botocore session, made after the AWS libraries' loggers are capped."""
    quiet_aws_libraries()
    return botocore.session.get_session()


def resource_ids(*documents: object) -> list[str]:
    """The volume, snapshot, image and instance ids in requests or answers, each once, in order
    of appearance."""
    found: dict[str, None] = {}

    def walk(value: object, named: bool) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(item, key in _ID_MEMBERS)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item, named)
        elif named and isinstance(value, str) and _RESOURCE_ID.fullmatch(value):
            found[value] = None

    for document in documents:
        walk(document, False)
    return list(found)


def _ids_text(ids: Iterable[str]) -> str:
    listed = list(ids)
    text = "".join(f" {resource_id}" for resource_id in listed[:MAX_LOGGED_IDS])
    more = len(listed) - MAX_LOGGED_IDS
    return f"{text} (+{more} more)" if more > 0 else text


def log_calls(client: Any) -> None:
    """Have ``client`` log one DEBUG line per call: its operation, the resource ids of the
    request and the answer, the HTTP status, the request id and the error code of a failure."""
    service = str(client.meta.service_model.service_id.hyphenize())

    def note_request(params: Mapping[str, Any], model: Any, context: Any, **_: Any) -> None:
        context[_CONTEXT_KEY] = (f"{service} {model.name}", resource_ids(params))

    def log_answer(http_response: Any, parsed: Any, context: Any, **_: Any) -> None:
        operation, ids = context.get(_CONTEXT_KEY, (service, []))
        answer = parsed if isinstance(parsed, Mapping) else {}
        metadata = answer.get("ResponseMetadata", {})
        status = metadata.get("HTTPStatusCode", getattr(http_response, "status_code", "?"))
        code = answer.get("Error", {}).get("Code")
        log.debug(
            "AWS %s%s: HTTP %s%s, request %s",
            operation,
            _ids_text(dict.fromkeys([*ids, *resource_ids(answer)])),
            status,
            f" {code}" if code else "",
            metadata.get("RequestId") or "-",
        )

    def log_no_answer(exception: BaseException, context: Any, **_: Any) -> None:
        operation, ids = context.get(_CONTEXT_KEY, (service, []))
        log.debug("AWS %s%s: no answer (%s)", operation, _ids_text(ids), type(exception).__name__)

    events = client.meta.events
    for event, handler in (
        (f"before-parameter-build.{service}", note_request),
        (f"after-call.{service}", log_answer),
        (f"after-call-error.{service}", log_no_answer),
    ):
        events.register(event, handler, unique_id=f"aminator-ng-call-log-{event}")


def error_code(error: Exception) -> str:
    """The AWS error code of a ClientError ("" for anything else)."""
    if isinstance(error, botocore.exceptions.ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


def aws_error(
    error: Exception,
    operation: str,
    subject: str,
    request_errors: Mapping[str, Callable[[str], AminatorError]] | None = None,
) -> AminatorError:
    """The project's error for a failed AWS call about ``subject``.

    ``request_errors`` maps AWS error codes that mean the request named something wrong to a
    factory of the error to raise (given the AWS message); other failures are CloudError (exit 1).
    """
    if isinstance(error, botocore.exceptions.NoCredentialsError):
        return HostError(
            f"{operation} {subject}: no AWS credentials found",
            hint="attach an instance profile, or set AWS_PROFILE or the AWS_* credentials",
        )
    if isinstance(error, botocore.exceptions.ClientError):
        details = error.response.get("Error", {})
        code = str(details.get("Code", "Unknown"))
        message = str(details.get("Message", ""))
        if request_errors and code in request_errors:
            return request_errors[code](f"{code}: {message}")
        return CloudError(f"{operation} {subject} failed: {code}: {message}")
    return CloudError(f"{operation} {subject} failed: {error}")


def call(operation: Callable[..., Any], subject: str, **kwargs: Any) -> Any:
    """One AWS call; a failure is raised as the project's error naming the call and subject."""
    try:
        return operation(**kwargs)
    except AWS_ERRORS as error:
        name = getattr(operation, "__name__", "call")
        raise aws_error(error, _api_name(name), subject) from error


def _api_name(method: str) -> str:
    """``create_volume`` -> ``CreateVolume``."""
    return "".join(part.capitalize() for part in method.split("_"))
