"""The project's error types.

Each error carries a one-line message and an optional hint. Its ``exit_code`` says which side is at
fault: 2 for a request that is wrong or a host that cannot run it, 1 for a valid bake that failed.
"""

from __future__ import annotations

from collections.abc import Mapping

EXIT_OK = 0
EXIT_BAKE_FAILED = 1
EXIT_BAD_REQUEST = 2
EXIT_SIGHUP = 129
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class AminatorError(Exception):
    """Base of every error the engine or a plugin reports to the operator."""

    exit_code = EXIT_BAKE_FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        #: The bake step that was running; filled in by the step that saw the error.
        self.step: str | None = None

    def __str__(self) -> str:
        return self.message


class RequestError(AminatorError):
    """The request is wrong: usage, a base, file, package or name that does not exist or fit."""

    exit_code = EXIT_BAD_REQUEST


class ConfigError(RequestError):
    """A configuration file, environment variable or option has a bad value."""


class NotFoundError(RequestError):
    """Something the request names (an image, a file, a package) does not exist."""


class ConflictError(RequestError):
    """Something the request would create is taken (an image name, say)."""


class HostError(RequestError):
    """This host cannot run the bake: not root, a tool missing, not on EC2."""


class BakeError(AminatorError):
    """A valid request whose bake failed."""


class CommandError(BakeError):
    """A command exited non-zero. Carries the command, its exit code and the end of its stderr."""

    def __init__(
        self,
        message: str,
        *,
        argv: list[str],
        returncode: int,
        stderr_tail: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.argv = argv
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class CloudError(BakeError):
    """The cloud backend (or the local store) refused or failed an operation."""


class ImageKeptError(CloudError):
    """The image was made whole and is kept, but the bake failed after it: a copy to another
    region, or the pruning of older images. ``images`` names every image kept, by region."""

    def __init__(self, message: str, *, images: Mapping[str, str], hint: str | None = None):
        super().__init__(message, hint=hint)
        self.images = dict(images)


class BakeTimeoutError(BakeError):
    """Something the bake waited for did not happen in time."""


class CleanupError(BakeError):
    """Releasing something the bake acquired failed."""


class InjectedFault(BakeError):
    """A failure injected on purpose by the test-only fault switch."""


class Interrupted(BaseException):
    """The process received SIGINT, SIGTERM or SIGHUP.

    A BaseException, like KeyboardInterrupt, so that ``except Exception`` never swallows it.
    """

    def __init__(self, signum: int, exit_code: int, name: str) -> None:
        super().__init__(f"interrupted by {name}")
        self.signum = signum
        self.exit_code = exit_code
        self.name = name
