"""Finding, loading and calling plugins.

Built-in plugins are entry points of the aminator-ng distribution in the ``aminator_ng`` group;
they register first. Other distributions' entry points in that group register after them, in name
order, so that a third party is asked first by ``firstresult`` hooks and can override a built-in.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pluggy

from aminator_ng.contract import hookspecs
from aminator_ng.contract.base_creator import BaseCreator
from aminator_ng.contract.cloud import CloudBackend
from aminator_ng.contract.model import BakeFacts, Distro, HygieneOutcome, Image, PackageInfo
from aminator_ng.contract.provisioner import Provisioner
from aminator_ng.contract.request import BakeRequest
from aminator_ng.contract.settings import Declarations, EngineSettings, Setting, settings_of
from aminator_ng.errors import ConfigError, RequestError
from aminator_ng.host.chroot import Chroot
from aminator_ng.host.run import HostPackages

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "aminator_ng"
BUILTIN_DISTRIBUTION = "aminator-ng"
DISABLE_VARIABLE = "AMINATOR_DISABLE_PLUGINS"
TRACE_VARIABLE = "AMINATOR_TRACE_PLUGINS"


@dataclass(frozen=True)
class PluginInfo:
    """One loaded plugin, as ``aminate plugins`` shows it."""

    name: str
    distribution: str
    version: str
    hooks: tuple[str, ...] = ()
    builtin: bool = False


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded, and why."""

    name: str
    distribution: str
    error: str


@dataclass
class LoadedPlugins:
    infos: list[PluginInfo] = field(default_factory=list)
    failures: list[PluginFailure] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def disabled_plugin_names(environ: Mapping[str, str] = os.environ) -> set[str]:
    return {n.strip() for n in environ.get(DISABLE_VARIABLE, "").split(",") if n.strip()}


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    found = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    unique = {(ep.name, ep.value): ep for ep in found}
    return sorted(
        unique.values(),
        key=lambda ep: (
            _normalise(ep.dist.name if ep.dist else "") != BUILTIN_DISTRIBUTION,
            ep.name,
        ),
    )


class Hooks:
    """The engine's typed view of the plugin hooks. Every call passes keyword arguments."""

    def __init__(self, manager: pluggy.PluginManager, loaded: LoadedPlugins) -> None:
        self.manager = manager
        self.loaded = loaded
        self._declarations: Declarations | None = None

    @property
    def _hook(self) -> Any:
        return self.manager.hook

    def host_packages(self, os_release: Mapping[str, str]) -> HostPackages:
        """What the plugins say provides tools on a host with this os-release, merged."""
        tools: dict[str, str] = {}
        install_command = None
        for answer in self._hook.aminator_host_packages(os_release=os_release):
            for tool, package in answer.tools.items():
                tools.setdefault(tool, package)
            install_command = install_command or answer.install_command
        return HostPackages(tools, install_command)

    def cloud_backend(self, name: str, settings: EngineSettings) -> CloudBackend:
        backend: CloudBackend | None = self._hook.aminator_cloud_backend(
            name=name, settings=settings
        )
        if backend is None:
            raise ConfigError(
                f"unknown cloud backend: {name}",
                hint="see 'aminate plugins' for the backends the loaded plugins offer",
            )
        return backend

    def _caller(self, hook_name: str, only: Sequence[str] | None, chosen_by: str) -> Any:
        """The hook, or when an environment names plugins for it, the hook of those only."""
        if only is None:
            return getattr(self._hook, hook_name)
        plugins = self.manager.list_name_plugin()
        missing = sorted(set(only) - {name for name, _ in plugins})
        if missing:
            raise ConfigError(
                f"{chosen_by} names plugins that are not loaded: {', '.join(missing)}",
                hint="see 'aminate plugins'",
            )
        others = [plugin for name, plugin in plugins if name not in only]
        return self.manager.subset_hook_caller(hook_name, remove_plugins=others)

    def check_environment(self, settings: EngineSettings) -> None:
        """Fail before anything is acquired when the environment names a plugin not loaded."""
        for hook_name, only, key in self._selections(settings):
            self._caller(hook_name, only, key)

    @staticmethod
    def _selections(settings: EngineSettings) -> list[tuple[str, Sequence[str] | None, str]]:
        where = f"environment {settings.environment}"
        distro = [settings.distro] if settings.distro else None
        provisioner = [settings.provisioner] if settings.provisioner else None
        return [
            ("aminator_detect_distro", distro, f"{where}: distro"),
            ("aminator_provisioner", provisioner, f"{where}: provisioner"),
            ("aminator_image_name", settings.finalizers, f"{where}: finalizers"),
        ]

    def setting_declarations(self) -> Declarations:
        """Each loaded plugin's declared settings, asked of each plugin on its own. A plugin
        whose declaration fails is unloaded and listed as failed, like one that fails to load."""
        if self._declarations is not None:
            return self._declarations
        declared: dict[str, list[Setting]] = {}
        types: dict[str, type] = {}
        for name, plugin in self.manager.list_name_plugin():
            others = [p for _, p in self.manager.list_name_plugin() if p is not plugin]
            caller = self.manager.subset_hook_caller("aminator_settings", remove_plugins=others)
            try:
                settings: list[Setting] = []
                for answer in caller():
                    if isinstance(answer, type) and dataclasses.is_dataclass(answer):
                        types[name] = answer
                        settings += settings_of(answer)
                    else:
                        settings += answer or ()
                if not all(isinstance(s, Setting) for s in settings):
                    raise TypeError(
                        "aminator_settings must return Setting objects or a dataclass of them"
                    )
            except Exception as exc:
                types.pop(name, None)
                self._unload(name, plugin, f"declaring its settings: {type(exc).__name__}: {exc}")
                continue
            if settings:
                declared[name] = settings
        loaded = frozenset(name for name, _ in self.manager.list_name_plugin())
        self._declarations = Declarations(declared, loaded, types)
        return self._declarations

    def _unload(self, name: str, plugin: object, error: str) -> None:
        self.manager.unregister(plugin)
        info = next((i for i in self.loaded.infos if i.name == name), None)
        if info is not None:
            self.loaded.infos.remove(info)
        distribution = info.distribution if info else "?"
        self.loaded.failures.append(PluginFailure(name, distribution, error))
        log.warning("plugin %s from %s failed %s", name, distribution, error)

    def detect_distro(
        self, os_release: Mapping[str, str], root: Path, settings: EngineSettings
    ) -> Distro | None:
        distro: Distro | None = self._caller(
            "aminator_detect_distro",
            [settings.distro] if settings.distro else None,
            f"environment {settings.environment}: distro",
        )(os_release=os_release, root=root)
        if distro is None and settings.distro:
            raise RequestError(
                f"distro plugin {settings.distro}, pinned by environment "
                f"{settings.environment}, does not recognise the base image",
                hint="pin another distro plugin, or leave the choice to detection",
            )
        return distro

    def prepare_chroot(
        self, chroot: Chroot, distro: Distro, stack: ExitStack, settings: EngineSettings
    ) -> None:
        self._hook.aminator_prepare_chroot(
            chroot=chroot, distro=distro, stack=stack, settings=settings
        )

    def provisioner(self, distro: Distro, settings: EngineSettings) -> Provisioner | None:
        provisioner: Provisioner | None = self._caller(
            "aminator_provisioner",
            [settings.provisioner] if settings.provisioner else None,
            f"environment {settings.environment}: provisioner",
        )(distro=distro, settings=settings)
        return provisioner

    def check_request(self, request: BakeRequest, settings: EngineSettings) -> None:
        self._hook.aminator_check_request(request=request, settings=settings)
        if request.name_template is not None:
            check = self._finalizer("aminator_check_name_template", settings)
            check(template=request.name_template)

    def read_package_file(self, path: Path) -> PackageInfo | None:
        info: PackageInfo | None = self._hook.aminator_read_package_file(path=path)
        return info

    def package_file_suffixes(self) -> tuple[str, ...]:
        answers: list[Sequence[str]] = self._hook.aminator_package_file_suffixes()
        return tuple(suffix for answer in answers for suffix in answer)

    @functools.cached_property
    def base_creators(self) -> list[BaseCreator]:
        """The base creators the plugins offer ``aminate base create``, by name: asked once,
        so that the command's flags and the bootstrap are the same creator's."""
        offered: list[BaseCreator] = self._hook.aminator_base_creator()
        return sorted(offered, key=lambda creator: creator.name)

    def image_name(self, facts: BakeFacts) -> str | None:
        name: str | None = self._finalizer("aminator_image_name", facts.settings)(facts=facts)
        return name

    def image_tags(self, facts: BakeFacts) -> dict[str, str]:
        merged: dict[str, str] = {}
        # pluggy answers last-registered first; merge so that later plugins override earlier.
        for tags in reversed(self._finalizer("aminator_image_tags", facts.settings)(facts=facts)):
            if tags:
                merged.update({str(k): str(v) for k, v in tags.items()})
        return merged

    def clean_image(
        self,
        chroot: Chroot,
        distro: Distro,
        settings: EngineSettings,
        started: datetime,
        package_history: Sequence[str],
    ) -> list[HygieneOutcome]:
        answers = self._caller(
            "aminator_clean_image",
            settings.finalizers,
            f"environment {settings.environment}: finalizers",
        )(
            chroot=chroot,
            distro=distro,
            settings=settings,
            started=started,
            package_history=package_history,
        )
        # pluggy answers last-registered first: the built-ins' outcomes come first.
        return [outcome for answer in reversed(answers) if answer for outcome in answer]

    def image_description(self, facts: BakeFacts) -> str | None:
        description: str | None = self._finalizer("aminator_image_description", facts.settings)(
            facts=facts
        )
        return description

    def image_registered(self, image: Image, facts: BakeFacts, cloud: CloudBackend) -> None:
        self._finalizer("aminator_image_registered", facts.settings)(
            image=image, facts=facts, cloud=cloud
        )

    def _finalizer(self, hook_name: str, settings: EngineSettings) -> Any:
        """The hook, asking only the environment's finalizers when it names them."""
        return self._caller(
            hook_name, settings.finalizers, f"environment {settings.environment}: finalizers"
        )

    def step_finished(self, bake_id: str, step: str, duration_s: float, failed: bool) -> None:
        try:
            self._hook.aminator_step_finished(
                bake_id=bake_id, step=step, duration_s=duration_s, failed=failed
            )
        except Exception:  # metrics must never fail a bake
            log.warning("a metrics plugin failed on step %s", step, exc_info=True)


def _hooks_of(manager: pluggy.PluginManager, plugin: object) -> tuple[str, ...]:
    callers = manager.get_hookcallers(plugin) or []
    return tuple(sorted(caller.name for caller in callers))


def _refuse_unknown_hooks(manager: pluggy.PluginManager, plugin: object) -> None:
    """Unregister a plugin that implements a hook this engine does not know (a typo, or a
    plugin written for another version), so that ``check_pending`` cannot fail for it."""
    unknown = sorted(
        caller.name
        for caller in manager.get_hookcallers(plugin) or []
        if caller.spec is None
        and not all(impl.optionalhook for impl in caller.get_hookimpls() if impl.plugin is plugin)
    )
    if unknown:
        manager.unregister(plugin)
        raise pluggy.PluginValidationError(
            plugin, f"implements unknown hooks: {', '.join(unknown)} (see docs/plugins.md)"
        )


def load_plugins(
    extra: Sequence[tuple[str, object]] = (),
    environ: Mapping[str, str] = os.environ,
) -> Hooks:
    """Register the built-in plugins, then other distributions' plugins, then ``extra``
    (name, module-or-object pairs, for tests and embedding)."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    loaded = LoadedPlugins()
    disabled = disabled_plugin_names(environ)
    for ep in _entry_points():
        distribution = ep.dist.name if ep.dist else "?"
        if ep.name in disabled:
            loaded.disabled.append(ep.name)
            log.debug("plugin %s (%s) disabled by %s", ep.name, distribution, DISABLE_VARIABLE)
            continue
        try:
            plugin = ep.load()
            manager.register(plugin, name=ep.name)
            _refuse_unknown_hooks(manager, plugin)
        except Exception as exc:  # a broken plugin must not take the engine down
            loaded.failures.append(
                PluginFailure(ep.name, distribution, f"{type(exc).__name__}: {exc}")
            )
            log.warning("plugin %s from %s failed to load: %s", ep.name, distribution, exc)
            continue
        loaded.infos.append(
            PluginInfo(
                ep.name,
                distribution,
                ep.dist.version if ep.dist else "?",
                _hooks_of(manager, plugin),
                _normalise(distribution) == BUILTIN_DISTRIBUTION,
            )
        )
    for name, plugin in extra:
        manager.register(plugin, name=name)
        loaded.infos.append(
            PluginInfo(name, "(registered in-process)", "", _hooks_of(manager, plugin))
        )
    manager.check_pending()
    trace = environ.get(TRACE_VARIABLE, "")
    if trace not in ("", "0"):
        _trace(manager, Path(trace) if "/" in trace else None)
    return Hooks(manager, loaded)


def _trace(manager: pluggy.PluginManager, record_file: Path | None) -> None:
    """Log every hook call and its answer; with a file, append one JSON line per call to it
    instead (the test suite uses this to check that every hook is called)."""

    def before(hook_name: str, impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        names = [impl.plugin_name for impl in impls]
        if record_file is not None:
            line = json.dumps({"hook": hook_name, "plugins": names, "pid": os.getpid()})
            # One short O_APPEND write per call: concurrent processes do not interleave.
            with record_file.open("a", encoding="utf-8") as file:
                file.write(line + "\n")
            return
        log.info("hook %s(%s) -> [%s]", hook_name, ", ".join(kwargs), ", ".join(names))

    def after(
        outcome: Any, hook_name: str, impls: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> None:
        if record_file is None:
            answer = outcome.exception if outcome.exception else outcome.get_result()
            log.info("hook %s returned %r", hook_name, answer)

    manager.add_hookcall_monitoring(before, after)


def require_provisioner(hooks: Hooks, distro: Distro, settings: EngineSettings) -> Provisioner:
    provisioner = hooks.provisioner(distro, settings)
    if provisioner is None:
        raise RequestError(
            f"no provisioner plugin handles {distro.pretty_name or distro.os_id}",
            hint="see 'aminate plugins'",
        )
    return provisioner
