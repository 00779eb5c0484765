"""The one module that runs subprocesses.

Commands are argv lists (never a shell), run with stdin from /dev/null unless input is given, in a
small fixed environment, in a session of their own so that the terminal's Ctrl-C reaches only the
engine, which then ends them. Their output goes to the bake log as it comes. A failure raises one
``CommandError`` carrying the command, its exit code and the last lines of its stderr.

Within ``commands_entering`` (a bake, ``base create``) every command enters the bake's namespaces
first (nsenter): it sees the bake's mounts, and it dies with the bake's PID namespace.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from aminator_ng.errors import BakeError, BakeTimeoutError, CommandError, HostError

log = logging.getLogger(__name__)

#: Where tools are looked up; the same for every command, whoever started the engine.
SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Bake hosts often sit behind a proxy; these pass through to every command.
PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


@dataclass(frozen=True)
class HostPackages:
    """What provides tools on this bake host, as the plugins say (``aminator_host_packages``):
    the package of each tool, and the command that installs a package."""

    tools: Mapping[str, str] = field(default_factory=dict)
    #: The host's install command, the package's name to follow: ``apt-get install``.
    install_command: str | None = None


#: What the plugins said of this host, for the hint of a missing tool (``know_host_packages``).
_host_packages = HostPackages()

STDERR_TAIL_LINES = 12
#: The argv prefix that enters the current bake's namespaces (an nsenter command), if any.
_namespace_entry: ContextVar[tuple[str, ...] | None] = ContextVar(
    "aminator_namespace_entry", default=None
)


@dataclass
class _Deadline:
    """When the commands of a bounded part of the work must have ended (``commands_bounded``)."""

    at: float
    seconds: float
    what: str
    hint: str | None
    #: It ended a command: what runs after, the cleanup, is not bounded.
    expired: bool = False


_deadline: ContextVar[_Deadline | None] = ContextVar("aminator_command_deadline", default=None)
# Greedy to the last "@" of the authority: a password may hold an unescaped "@".
_CREDENTIALS_IN_URL = re.compile(r"(?<=://)[^/\s]+@")


@dataclass(frozen=True)
class Completed:
    """What a finished command left: its argv, exit code and captured output."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def mask_credentials(text: str) -> str:
    """Hide ``user:password@`` in URLs (proxy settings) before they reach a log."""
    return _CREDENTIALS_IN_URL.sub("***@", text)


def command_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The fixed environment every command gets, plus the proxy variables and ``extra``."""
    env = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PATH": SEARCH_PATH, "HOME": "/root"}
    for name in PROXY_VARIABLES:
        if name in os.environ:
            env[name] = os.environ[name]
    if extra:
        env.update(extra)
    return env


def know_host_packages(packages: HostPackages) -> None:
    """Remember what provides tools on this host, for the hint of a missing one."""
    global _host_packages
    _host_packages = packages


def _missing_tool(name: str) -> HostError:
    package = _host_packages.tools.get(Path(name).name)
    hint = None
    if package and _host_packages.install_command:
        hint = f"install it with: {_host_packages.install_command} {package}"
    elif package:
        hint = f"it is in the package {package}"
    return HostError(f"required tool not found: {name}", hint=hint)


def find_tool(name: str) -> str:
    """The absolute path of a tool, or a HostError naming the host's package that provides it."""
    found = shutil.which(name, path=SEARCH_PATH)
    if found is None:
        raise _missing_tool(name)
    return found


def require_tools(names: Iterable[str]) -> None:
    """Fail early, before anything is acquired, when a tool is missing."""
    for name in names:
        find_tool(name)


@contextlib.contextmanager
def commands_entering(entry: Sequence[str]) -> Iterator[None]:
    """Within the context, every command runs through ``entry``, an nsenter argv (without the
    command or ``--``) that enters the bake's namespaces."""
    token = _namespace_entry.set(tuple(entry))
    try:
        yield
    finally:
        _namespace_entry.reset(token)


def _entered(args: list[str], cwd: str | os.PathLike[str] | None) -> tuple[list[str], str | None]:
    """The argv and working directory to start: ``args`` as is, or through the namespace entry
    (the tool is looked up first, so that a missing one is still a HostError)."""
    entry = _namespace_entry.get()
    if entry is None:
        return args, os.fspath(cwd) if cwd is not None else None
    tool = args[0] if Path(args[0]).is_absolute() else find_tool(args[0])
    directory = [f"--wdns={os.fspath(cwd)}"] if cwd is not None else []
    return [*entry, *directory, "--", tool, *args[1:]], None


def _pump(stream: IO[str], sink: deque[str] | list[str], prefix: str) -> None:
    for line in stream:
        sink.append(line)
        log.debug("%s%s", prefix, line.rstrip("\n"))


def _end_process_group(process: subprocess.Popen[str]) -> None:
    """Stop a command the engine gave up on, and everything it started in its session."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _gist(stderr: str) -> str:
    """The part of a command's stderr that explains its failure, on one line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return "; ".join(lines) if len(lines) <= 3 else lines[-1]


@contextlib.contextmanager
def commands_bounded(seconds: float, what: str, *, hint: str | None = None) -> Iterator[None]:
    """Within the context, every command ends by ``seconds`` from now: one still running then
    is ended (its process group, and with it its namespaces), and the BakeTimeoutError says that
    ``what`` took too long. The commands that run after that one, undoing what it left, are not
    bounded."""
    token = _deadline.set(_Deadline(time.monotonic() + seconds, seconds, what, hint))
    try:
        yield
    finally:
        _deadline.reset(token)


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    check: bool = True,
    timeout: float | None = None,
    capture_stdout: bool = True,
    what: str | None = None,
    hint: str | None = None,
) -> Completed:
    """Run a command and wait for it.

    ``what`` names the action in the error message ("mount /dev/loop3p1"); ``hint`` is attached to
    the error. With ``check=False`` a non-zero exit is returned, not raised.
    """
    args = [os.fspath(a) for a in argv]
    bound = _deadline.get()
    if bound is not None and bound.expired:
        bound = None
    limit = timeout
    if bound is not None:
        left = max(bound.at - time.monotonic(), 0.0)
        limit = left if timeout is None else min(timeout, left)
    full_env = command_environment(env)
    log.debug("+ %s", mask_credentials(shlex.join(args)))
    if env:
        log.debug("  with %s", mask_credentials(" ".join(f"{k}={v}" for k, v in env.items())))
    started, directory = _entered(args, cwd)
    try:
        process = subprocess.Popen(
            started,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env=full_env,
            cwd=directory,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise _missing_tool(started[0]) from exc
    stdout_lines: list[str] = []
    stderr_tail: deque[str] = deque(maxlen=200)
    assert process.stdout is not None and process.stderr is not None
    out_sink: deque[str] | list[str] = stdout_lines if capture_stdout else deque(maxlen=0)
    pumps = [
        threading.Thread(target=_pump, args=(process.stdout, out_sink, "  | "), daemon=True),
        threading.Thread(target=_pump, args=(process.stderr, stderr_tail, "  ! "), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    try:
        if input is not None:
            assert process.stdin is not None
            process.stdin.write(input)
            process.stdin.close()
        returncode = process.wait(timeout=limit)
    except subprocess.TimeoutExpired as exc:
        _end_process_group(process)
        if bound is not None and limit != timeout:
            bound.expired = True
            running = what or shlex.join(args)
            if len(running) > 60:  # a whole argv: its command and first argument say enough
                running = " ".join(running.split()[:2])
            raise BakeTimeoutError(
                f"{bound.what} took longer than {bound.seconds:g} s: "
                f"{running} was still running, and was ended",
                hint=bound.hint,
            ) from exc
        raise BakeTimeoutError(
            f"{what or shlex.join(args)} did not finish in {timeout:g} s"
        ) from exc
    except BaseException:
        # Interrupted or timed out: the command must not outlive the engine's interest in it.
        _end_process_group(process)
        raise
    finally:
        for pump, stream in zip(pumps, (process.stdout, process.stderr), strict=True):
            pump.join(timeout=5)
            # A pipe still held open by a daemon the command left is closed by its pump at EOF.
            if not pump.is_alive():
                stream.close()
    completed = Completed(args, returncode, "".join(stdout_lines), "".join(stderr_tail))
    if check and returncode != 0:
        tail = "".join(list(stderr_tail)[-STDERR_TAIL_LINES:]).strip()
        label = what or shlex.join(args)
        message = f"{label} failed (exit {returncode})" + (f": {_gist(tail)}" if tail else "")
        raise CommandError(message, argv=args, returncode=returncode, stderr_tail=tail, hint=hint)
    return completed


def run_attached(
    argv: Sequence[str | os.PathLike[str]], *, env: Mapping[str, str] | None = None
) -> int:
    """Run an interactive command on the engine's own terminal and return its exit status.
    While it runs, Ctrl-C is the command's: the engine ignores SIGINT."""
    args = [os.fspath(a) for a in argv]
    log.debug("+ %s (attached to the terminal)", mask_credentials(shlex.join(args)))
    started, directory = _entered(args, None)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process = subprocess.Popen(started, env=command_environment(env), cwd=directory)
    except FileNotFoundError as exc:
        signal.signal(signal.SIGINT, previous)
        raise _missing_tool(started[0]) from exc
    try:
        return process.wait()
    except BaseException:
        # It shares the engine's session; what it started ends with the bake's namespace.
        process.kill()
        process.wait()
        raise
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def helper_process(argv: Sequence[str | os.PathLike[str]], *, what: str) -> Iterator[Helper]:
    """A long-running helper of the engine's own (never an image's program), with pipes to its
    stdin and stdout; its stderr goes to the log. On leaving, its stdin is closed, which tells it
    to end, and it is waited for (killed if it does not end)."""
    args = [os.fspath(a) for a in argv]
    log.debug("+ %s &", shlex.join(args))
    process = subprocess.Popen(
        args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        env=command_environment(),
        start_new_session=True,
    )
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    errors: deque[str] = deque(maxlen=20)
    pump = threading.Thread(target=_pump, args=(process.stderr, errors, "  ! "), daemon=True)
    pump.start()
    helper = Helper(process, what, errors)
    try:
        yield helper
    finally:
        helper.end()
        pump.join(timeout=5)
        process.stdout.close()
        if not pump.is_alive():
            process.stderr.close()


@dataclass
class Helper:
    """A running helper process (see ``helper_process``)."""

    process: subprocess.Popen[str]
    what: str
    errors: deque[str]

    def end(self) -> None:
        """Close its stdin, which tells it to end, and wait for it (kill it if it does not)."""
        assert self.process.stdin is not None
        if not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _end_process_group(self.process)

    def read_line(self) -> str:
        """The next line the helper prints; a BakeError naming it when it ends instead."""
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            returncode = self.process.wait()
            said = _gist("".join(self.errors)) or f"exit {returncode}"
            raise BakeError(f"{self.what} ended at start: {said}")
        return line.strip()
