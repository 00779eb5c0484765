"""The hooks plugins implement. docs/plugins.md is the reference; a test keeps the two in step.

Hooks are called with keyword arguments only. A plugin may implement any subset and may leave
out arguments it does not need. For a ``firstresult`` hook, the first non-None answer wins and
None means "not mine, ask the next plugin"; third-party plugins are asked before built-ins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import pluggy

from aminator_ng.contract.base_creator import BaseCreator
from aminator_ng.contract.cloud import CloudBackend
from aminator_ng.contract.model import BakeFacts, Distro, HygieneOutcome, Image, PackageInfo
from aminator_ng.contract.provisioner import Provisioner
from aminator_ng.contract.request import BakeRequest
from aminator_ng.contract.settings import EngineSettings, Setting
from aminator_ng.host.chroot import Chroot
from aminator_ng.host.run import HostPackages

PROJECT = "aminator_ng"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def aminator_settings() -> type | Sequence[Setting] | None:
    """Declare this plugin's settings: the keys of its ``[plugins.NAME]`` table, where NAME is
    the name the plugin was loaded under (its entry-point name), and the flags it adds to
    ``aminate bake``.

    Called once per command, at startup, before the configuration is read. The engine checks
    every config file against the declarations (an undeclared key or a value of the wrong type
    is a ConfigError naming the file and key), resolves each setting over all layers (default,
    files, environment, ``AMINATOR_<PLUGIN>_<KEY>``, flag) and hands the values over, defaults
    included. A plugin that returns a dataclass whose fields are ``declared`` settings gets an
    instance of it from ``settings.of(ThatClass)``, whatever name it was loaded under; one that
    returns ``Setting`` objects reads them as ``settings.plugin("NAME")``. A setting with
    ``flag=True`` (or ``flags``) becomes a bake option, ``--key-with-hyphens`` by default (a bool
    gets ``--no-...`` as well).

    :return: the plugin's settings dataclass, or its settings, or None when it has none.
    """


@hookspec
def aminator_host_packages(os_release: Mapping[str, str]) -> HostPackages | None:
    """Say which packages provide this plugin's tools on a bake host of this distribution;
    the plugin of the host's own distribution also names the packages of the engine's tools
    and the command that installs a package. Only the hint of a missing tool uses it.

    Called once per command, at startup. Every answer counts: for a tool, the first plugin
    to name it; for the install command, the first to give one.

    :param os_release: the bake host's own /etc/os-release fields.
    :return: the packages, or None for a host this plugin knows nothing about.
    """


@hookspec
def aminator_check_request(request: BakeRequest, settings: EngineSettings) -> None:
    """Check a bake request before anything is acquired, and refuse what cannot work.

    Called once per bake, in the step ``read_packages``, after the package arguments are read
    and before the base image is resolved. Raise a RequestError (or ConfigError) naming what
    is wrong: the bake then ends with exit 2 and nothing to release.

    :param request: the bake as the operator asked for it (base, packages, name template,
        suffix, tags, repositories).
    :param settings: the engine's and the plugins' settings.
    """


@hookspec(firstresult=True)
def aminator_cloud_backend(name: str, settings: EngineSettings) -> CloudBackend | None:
    """Construct the cloud backend called ``name`` (from ``--cloud`` or ``AMINATOR_CLOUD``).

    Called once per command, before anything is acquired.

    :param name: the backend asked for, such as ``"local"`` or ``"ec2"``.
    :param settings: the engine's settings (home directory, log directory, output mode), and
        each plugin's own with ``settings.of(ItsSettings)``.
    :return: a backend, or None when the name is not this plugin's.
    """


@hookspec(firstresult=True)
def aminator_detect_distro(os_release: Mapping[str, str], root: Path) -> Distro | None:
    """Recognise the distribution of a mounted image root.

    Called once per bake, after the root filesystem is mounted and before the chroot is set up.
    When the environment pins a distro plugin, only that plugin is asked.

    :param os_release: the fields of the image's /etc/os-release (``ID``, ``ID_LIKE``,
        ``VERSION_ID``, ...), empty if the file is missing.
    :param root: where the engine's process reaches the mounted root (it is mounted in the
        bake's own namespace), for plugins that need to look further. Resolve paths inside it
        with ``aminator_ng.api.resolve_in_root``; read only, nothing runs in the image yet.
    :return: a Distro, or None when the distribution is not this plugin's.
    """


@hookspec
def aminator_prepare_chroot(
    chroot: Chroot, distro: Distro, stack: ExitStack, settings: EngineSettings
) -> None:
    """Prepare the chroot for package installs, and arrange the undoing.

    Called once per bake, after /sys, /dev, /run and resolv.conf are in place (each command in
    the image gets a /proc of its own), with the step ``chroot_setup``. Enter every change as a
    context manager on ``stack`` (for example
    ``stack.enter_context(replaced_file(chroot, "/usr/sbin/policy-rc.d", ...))``): the stack is
    closed in the ``chroot_teardown`` step, on success and on failure alike.

    :param chroot: the image root; commands run inside it with ``chroot.run``, and files are
        read and changed with its methods, which resolve each path inside the image as they act.
    :param distro: what ``aminator_detect_distro`` recognised; ignore distros that are not yours.
    :param stack: the ExitStack of the chroot's lifetime.
    :param settings: the engine's and the plugins' settings.
    """


@hookspec(firstresult=True)
def aminator_provisioner(distro: Distro, settings: EngineSettings) -> Provisioner | None:
    """Choose the provisioner that installs packages into this distro.

    Called once per bake, right after distro detection. When the environment names a
    provisioner plugin, only that plugin is asked.

    :param distro: the recognised distro.
    :param settings: the engine's and the plugins' settings (``settings.of(ItsSettings)``).
    :return: a Provisioner, or None when this plugin does not provision that distro.
    """


@hookspec(firstresult=True)
def aminator_read_package_file(path: Path) -> PackageInfo | None:
    """Read a package file's name, epoch, version, release and architecture.

    Called for each PACKAGE argument that is a file, before anything is acquired.

    :param path: the package file on the host.
    :return: its metadata, or None when the file is not of this plugin's format.
        Raise RequestError when the file is of your format but unreadable (corrupt).
    """


@hookspec
def aminator_package_file_suffixes() -> Sequence[str] | None:
    """The file name endings of this plugin's package files (``.deb``), so that a PACKAGE
    argument ending so is taken for a file even when it is not there (and the bake says the
    file is missing) rather than for a package name.

    Called once per bake, in step ``read_packages``.

    :return: the endings, or None.
    """


@hookspec
def aminator_base_creator() -> BaseCreator | None:
    """Offer ``aminate base create`` a way to bootstrap roots: its name for ``--distro``, its
    options (flags of ``base create``) and tools, and the bootstrap itself.

    Called once per command, at startup. With one creator offered, it is the default; with
    several, ``--distro`` chooses.

    :return: the plugin's base creator, or None when it has none.
    """


@hookspec
def aminator_check_name_template(template: str) -> None:
    """Check the ``-n`` name template before anything is acquired: a finalizer that will name
    the image refuses a template it cannot render, instead of failing after the install.

    Called once per bake with a template, in step ``read_packages``. Like the finalizer hooks
    below, it asks only the environment's ``finalizers`` when it names them.

    :param template: the template as given (``-n``, or ``name`` in ``[bake]``).
    """


@hookspec(firstresult=True)
def aminator_image_name(facts: BakeFacts) -> str | None:
    """Name the baked image.

    Called once per bake, after the install. ``facts.name_template`` and ``facts.suffix`` carry
    ``-n`` and ``-s``. The engine checks the name's charset and uniqueness.

    The finalizer hooks ask only the environment's ``finalizers``, when it names them;
    ``facts.settings`` holds the engine's and the plugins' settings.

    :return: the name, or None to leave it to the next plugin.
    """


@hookspec
def aminator_image_tags(facts: BakeFacts) -> Mapping[str, str] | None:
    """Contribute tags to the baked image. All plugins' tags are merged; later plugins
    (third parties) override earlier ones, and ``--tag`` overrides all.

    Called once per bake, after the install.

    The finalizer hooks ask only the environment's ``finalizers``, when it names them;
    ``facts.settings`` holds the engine's and the plugins' settings.
    """


@hookspec
def aminator_clean_image(
    chroot: Chroot,
    distro: Distro,
    settings: EngineSettings,
    started: datetime,
    package_history: Sequence[str],
) -> Sequence[HygieneOutcome] | None:
    """Make the image safe to launch many instances from: remove what a bake leaves that must
    be each instance's own (SSH host keys, the machine id) and say what each rule did.

    ``started`` is when the bake began: an inode whose change time is later was made or
    changed by this bake. ``package_history`` names the package manager's own history files
    (the provisioner's ``history_files``).

    Called once per bake, in the step ``hygiene``, after the install and the inspection and
    before the image is named; the chroot is still set up. Asked only of the environment's
    ``finalizers``, when it names them. Every plugin's outcomes are kept, in the JSON
    result's ``hygiene`` list and the image's ``hygiene`` tag.

    :return: one outcome per rule (a rule the operator switched off says so), or None.
    """


@hookspec(firstresult=True)
def aminator_image_description(facts: BakeFacts) -> str | None:
    """Describe the baked image (the description names its ancestor).

    Called once per bake, after the install.

    The finalizer hooks ask only the environment's ``finalizers``, when it names them;
    ``facts.settings`` holds the engine's and the plugins' settings.

    :return: the description, or None to leave it to the next plugin.
    """


@hookspec
def aminator_image_registered(image: Image, facts: BakeFacts, cloud: CloudBackend) -> None:
    """Act on a newly registered image: share it, copy it, prune old ones.

    Called once per bake, after registration, in the step ``publish``. An exception here fails
    the bake and the new image is deregistered.

    The finalizer hooks ask only the environment's ``finalizers``, when it names them;
    ``facts.settings`` holds the engine's and the plugins' settings.
    """


@hookspec
def aminator_step_finished(bake_id: str, step: str, duration_s: float, failed: bool) -> None:
    """Receive a step's timing, for metrics.

    Called as each bake step ends, successfully or not. Must not raise.
    """
