"""AWS call failures as the project's errors, each naming the operation and what it was about."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import botocore.exceptions  # type: ignore[import-untyped]  # botocore ships no types

from aminator_ng.api import AminatorError, CloudError, HostError

AWS_ERRORS = (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError)


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
