"""The ``aminate`` command line (DESIGN.md's CLI contract).

Global options are accepted before and after the command name. After them, a word that names a
command runs that command; anything else is handed to ``bake``, the default command.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from aminator_ng import __version__
from aminator_ng.commands.base_create import create_base
from aminator_ng.commands.config import (
    GLOBAL_SETTINGS,
    EffectiveConfig,
    Flags,
    engine_settings,
    read_config_files,
    resolve,
)
from aminator_ng.commands.logs import LOG_FILE_ONLY, configure_logging, open_bake_log
from aminator_ng.commands.output import (
    bake_text,
    config_text,
    describe,
    image_text,
    images_text,
    json_value,
    plan_text,
    print_json,
    prune_text,
    report_failure,
    sbom_text,
)
from aminator_ng.commands.setting_options import (
    add_creator_options,
    add_plugin_options,
    setting_options,
    settings_given,
)
from aminator_ng.commands.shell import open_shell
from aminator_ng.contract.base_creator import BaseCreator
from aminator_ng.contract.cloud import CloudBackend, lineage
from aminator_ng.contract.plugins import Hooks, load_plugins
from aminator_ng.contract.request import BAKE_SETTINGS, BakeRequest
from aminator_ng.contract.settings import EngineSettings, parse_duration
from aminator_ng.errors import (
    EXIT_BAD_REQUEST,
    EXIT_BAKE_FAILED,
    EXIT_SIGINT,
    AminatorError,
    ConflictError,
    Interrupted,
    NotFoundError,
)
from aminator_ng.host.diskimage import FILESYSTEMS, LAYOUTS, parse_size
from aminator_ng.host.osrelease import read_os_release
from aminator_ng.host.run import know_host_packages
from aminator_ng.host.signals import interrupts_raised
from aminator_ng.pipeline.bake import Bake, new_bake_id
from aminator_ng.pipeline.host_seam import require_root
from aminator_ng.pipeline.package_cache import PackageCache
from aminator_ng.pipeline.recovery import bake_records, clean_up
from aminator_ng.pipeline.retention import Retention, prune
from aminator_ng.pipeline.sbom import stored_sbom

log = logging.getLogger("aminator_ng")

F = TypeVar("F", bound=Callable[..., Any])
GLOBALS_KEY = "aminator_ng.globals"
#: Global options that take a value, and flags; the dispatch rule skips over them.
GLOBAL_VALUE_OPTIONS = ("--cloud", "--output", "-e", "--environment", "--config")
GLOBAL_FLAGS = ("-q", "--quiet", "--debug")
#: Where a bake command keeps its Bake in the click context, for the failure report.
BAKE_KEY = "aminator_ng.bake"


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if param.name and ctx.get_parameter_source(param.name) is not ParameterSource.DEFAULT:
        ctx.meta.setdefault(GLOBALS_KEY, {})[param.name] = value
    return value


def global_options(command: F) -> F:
    """The options every command accepts, before or after its name, with the same effect."""
    decorators = [
        *(
            click.option(
                *flag.names,
                metavar=flag.metavar,
                expose_value=False,
                callback=_remember,
                help=setting.help,
            )
            for setting in GLOBAL_SETTINGS
            for flag in setting.command_line
        ),
        click.option(
            "--config",
            metavar="FILE",
            type=click.Path(path_type=Path),
            expose_value=False,
            callback=_remember,
            help="Read this config file after the system and user ones (or AMINATOR_CONFIG).",
        ),
        click.option(
            "--output",
            type=click.Choice(["text", "json"]),
            expose_value=False,
            callback=_remember,
            help="text for people, json for scripts (stdout only).",
        ),
        click.option(
            "-q",
            "--quiet",
            is_flag=True,
            expose_value=False,
            callback=_remember,
            help="Only warnings and errors on stderr.",
        ),
        click.option(
            "--debug",
            is_flag=True,
            expose_value=False,
            callback=_remember,
            help="Debug logging, and tracebacks on errors.",
        ),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


class App:
    """What a command needs: the plugins, and the settings from every layer."""

    def __init__(
        self,
        ctx: click.Context,
        bake_flags: dict[str, Any] | None = None,
        plugin_flags: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        given = ctx.meta.get(GLOBALS_KEY, {})
        output = given.get("output") or "text"
        debug, quiet = bool(given.get("debug")), bool(given.get("quiet"))
        configure_logging(debug=debug, quiet=quiet)
        self.hooks: Hooks = ctx.find_root().obj
        files = read_config_files(given.get("config"), os.environ)
        flags = Flags(
            global_={k: given[k] for k in ("cloud", "environment") if given.get(k)},
            bake=bake_flags or {},
            plugins=plugin_flags or {},
        )
        declarations = self.hooks.setting_declarations()
        self.config: EffectiveConfig = resolve(files, declarations, flags)
        self.settings: EngineSettings = engine_settings(
            self.config, output=output, debug=debug, quiet=quiet, declarations=declarations
        )
        self.hooks.check_environment(self.settings)
        ctx.meta["aminator_ng.settings"] = self.settings

    @functools.cached_property
    def cloud(self) -> CloudBackend:
        """The cloud backend the settings name, made on first use."""
        return self.hooks.cloud_backend(self.settings.cloud, self.settings)

    @property
    def json(self) -> bool:
        return self.settings.output == "json"

    def emit(self, data: Any, text: str) -> None:
        if self.json:
            print_json(data)
        else:
            click.echo(text)


class AminateGroup(click.Group):
    """Dispatch: the first word after the global options names a command, or the bake."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        args = list(args)
        index = _first_word(args)
        if index is not None:
            word = args[index]
            if word not in self.commands:
                args.insert(index, "bake")
        return super().parse_args(ctx, args)


def _first_word(args: Sequence[str]) -> int | None:
    """Where the command (or the bake's arguments) starts, after the global options."""
    index = 0
    while index < len(args):
        word = args[index]
        if word in ("--help", "--version"):
            return None
        if word in GLOBAL_FLAGS or any(word.startswith(f"{o}=") for o in GLOBAL_VALUE_OPTIONS):
            index += 1
        elif word in GLOBAL_VALUE_OPTIONS:
            index += 2
        else:
            return index
    return None


@click.group(cls=AminateGroup, context_settings={"help_option_names": ["--help"]})
@click.version_option(__version__, "--version", prog_name="aminate")
@global_options
def cli() -> None:
    """Bake machine images in a chroot: no builder instance is ever booted.

    \b
    aminate -b BASE PACKAGE...          bake (the default command)
    aminate base create NAME            make a base image (local backend)
    aminate images                      list images
    """


@cli.command(context_settings={"help_option_names": ["--help"]})
@setting_options(BAKE_SETTINGS)
@click.argument("packages", nargs=-1, metavar="PACKAGE...")
@global_options
@click.pass_context
def bake(ctx: click.Context, /, packages: tuple[str, ...], **options: Any) -> None:
    """Bake PACKAGE... (files or names; the first names the image) onto a base image.

    Each option may also be set in the [bake] table of a config file, by its long name.
    """
    given = settings_given(ctx)
    if not packages:
        raise click.UsageError("missing PACKAGE: name at least one package file or package name")
    app = App(
        ctx,
        bake_flags=given.pop(None, {}),
        plugin_flags={plugin: flags for plugin, flags in given.items() if plugin is not None},
    )
    effective = app.config.section("bake")
    if not effective["base_ami"]:
        raise click.UsageError(
            "missing the base image: -b NAME_OR_ID or -B ID (or base_ami in [bake])"
        )
    request = BakeRequest.from_settings(effective["base_ami"], packages, effective)
    cloud = app.cloud
    if request.dry_run:
        plan = Bake(request, app.settings, app.hooks, cloud).plan()
        app.emit(plan, plan_text(plan))
        return
    bake_id = new_bake_id()
    log_path = app.settings.log_dir / f"{bake_id}.log"
    handler = open_bake_log(log_path)
    runner = Bake(request, app.settings, app.hooks, cloud, bake_id=bake_id, log_path=log_path)
    ctx.meta[BAKE_KEY] = runner
    log.info("bake %s: %s on %s (log %s)", bake_id, " ".join(packages), request.base, log_path)
    try:
        result = runner.run()
    except BaseException as exc:
        # The operator sees the failure on stderr (from main); the log file needs it too.
        file_only = {LOG_FILE_ONLY: True}
        log.error("bake %s failed: %s", bake_id, describe(exc), extra=file_only)
        for resource in reversed(runner.kept if runner.preserved else []):
            log.error(
                "kept %s %s: %s",
                resource.kind,
                resource.resource_id,
                resource.release,
                extra=file_only,
            )
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    app.emit(result.as_dict(), bake_text(result))


@cli.group(context_settings={"help_option_names": ["--help"]})
@global_options
def base() -> None:
    """Make or import base images (local backend)."""


@base.command("create", context_settings={"help_option_names": ["--help"]})
@click.argument("name")
@click.option(
    "--distro",
    metavar="NAME",
    help="The plugin's base creator to bootstrap with (default: the only one).",
)
@click.option("--size", default="2G", show_default=True, help="Disk size.")
@click.option(
    "--layout",
    type=click.Choice(LAYOUTS),
    default="gpt",
    show_default=True,
    help="gpt: one root partition; whole: the filesystem on the whole disk.",
)
@click.option(
    "--fs",
    "filesystem",
    type=click.Choice(FILESYSTEMS),
    default="ext4",
    show_default=True,
    help="The root filesystem.",
)
@global_options
@click.pass_context
def base_create(
    ctx: click.Context,
    /,
    name: str,
    distro: str | None,
    size: str,
    layout: str,
    filesystem: str,
    **options: Any,
) -> None:
    """Bootstrap a minimal root with a distro plugin (--distro) into a disk image and register
    it as NAME. The options after --fs are the base creators' own."""
    app = App(ctx)
    size_bytes = parse_size(size)
    creator = chosen_creator(app.hooks.base_creators, distro)
    given = settings_given(ctx)
    unused = sorted(plugin for plugin in given if plugin not in (None, creator.name))
    if unused:
        raise click.UsageError(
            f"{', '.join(unused)}'s options do not apply to --distro {creator.name}"
        )
    cloud = app.cloud
    image = create_base(
        creator,
        cloud,
        app.settings,
        name=name,
        options=creator.options_from(given.get(creator.name, {})),
        size_bytes=size_bytes,
        layout=layout,
        filesystem=filesystem,
    )
    app.emit(image.as_dict(), f"{image.image_id} {image.name}")


def chosen_creator(creators: Sequence[BaseCreator], distro: str | None) -> BaseCreator:
    """The base creator ``--distro`` names; without it, the only one."""
    names = ", ".join(c.name for c in creators) or "none"
    if distro is None and len(creators) == 1:
        return creators[0]
    if distro is None:
        raise click.UsageError(f"choose a base creator with --distro: {names}")
    for creator in creators:
        if creator.name == distro:
            return creator
    raise click.UsageError(f"no plugin creates bases for --distro {distro} (offered: {names})")


@base.command("import", context_settings={"help_option_names": ["--help"]})
@click.argument("name")
@click.argument("file", metavar="FILE.raw", type=click.Path(path_type=Path))
@global_options
@click.pass_context
def base_import(ctx: click.Context, name: str, file: Path) -> None:
    """Register an existing raw disk image FILE.raw as base image NAME."""
    app = App(ctx)
    cloud = app.cloud
    image = cloud.import_image(
        name, file.resolve(), f"imported from {file.name}", {"imported_from": str(file.resolve())}
    )
    app.emit(image.as_dict(), f"{image.image_id} {image.name}")


@cli.group(invoke_without_command=True, context_settings={"help_option_names": ["--help"]})
@global_options
@click.pass_context
def images(ctx: click.Context) -> None:
    """List images (the default), show one, or print its SBOM."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(images_list)


@images.command("list", context_settings={"help_option_names": ["--help"]})
@global_options
@click.pass_context
def images_list(ctx: click.Context) -> None:
    """List the images of the cloud backend, oldest first."""
    app = App(ctx)
    found = app.cloud.list_images()
    app.emit([i.as_dict() for i in found], images_text(found))


@images.command("show", context_settings={"help_option_names": ["--help"]})
@click.argument("image_id", metavar="ID")
@global_options
@click.pass_context
def images_show(ctx: click.Context, image_id: str) -> None:
    """Show one image: attributes, tags, lineage, packages, SBOM and size on disk."""
    app = App(ctx)
    cloud = app.cloud
    image = cloud.get_image(image_id)
    manifest = cloud.image_manifest(image_id)
    ancestors = lineage(cloud, image)
    disk_usage = cloud.disk_usage(image)
    sbom_path = cloud.sbom_location(image_id)
    sbom = stored_sbom(cloud, image) if sbom_path else None
    data = {
        **image.as_dict(),
        "lineage": ancestors,
        "disk_usage_bytes": disk_usage,
        "package_count": len(manifest),
        "manifest": [m.as_dict() for m in manifest],
        "sbom_path": sbom_path,
        "sbom_components": sbom.component_count if sbom else None,
        "sbom_sha256": sbom.sha256 if sbom else None,
    }
    text = image_text(image, manifest, ancestors, disk_usage)
    app.emit(data, f"{text}\n{sbom_text(sbom_path, sbom)}")


@images.command("sbom", context_settings={"help_option_names": ["--help"]})
@click.argument("image_id", metavar="ID")
@global_options
@click.pass_context
def images_sbom(ctx: click.Context, image_id: str) -> None:
    """Print image ID's CycloneDX SBOM (JSON) exactly as it was stored with the image."""
    app = App(ctx)
    cloud = app.cloud
    image = cloud.get_image(image_id)
    data = cloud.image_sbom(image_id)
    if data is None:
        raise NotFoundError(
            f"image {image_id} ({image.name}) has no SBOM",
            hint="imported base images have none; a baked one's is kept where it was baked",
        )
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@images.command("rm", context_settings={"help_option_names": ["--help"]})
@click.argument("image_id", metavar="ID")
@global_options
@click.pass_context
def images_rm(ctx: click.Context, image_id: str) -> None:
    """Remove image ID and the data only it uses (refused while a bake uses it)."""
    app = App(ctx)
    cloud = app.cloud
    freed = cloud.remove_image(image_id)
    log.info("removed %s", image_id)
    app.emit(
        {"image_id": image_id, "freed_bytes": freed},
        f"removed {image_id}, freed {freed / 2**20:.1f} MiB",
    )


@images.command("prune", context_settings={"help_option_names": ["--help"]})
@click.option(
    "--keep", type=click.IntRange(min=1), required=True, metavar="N", help="Newest images kept."
)
@click.option("--family", metavar="NAME", help="Only this family (default: every family).")
@click.option(
    "--older-than", metavar="DURATION", help="Remove only images older than this: 36h, 90d, 12w."
)
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@global_options
@click.pass_context
def images_prune(
    ctx: click.Context, keep: int, family: str | None, older_than: str | None, dry_run: bool
) -> None:
    """Keep the newest N images of each family, and remove the older ones that are not
    protected, in use, or base images. A family is PACKAGE/BASE_FAMILY, from the family_tag
    tag bakes set."""
    app = App(ctx)
    cloud = app.cloud
    retention = Retention(
        keep,
        app.settings.family_tag,
        family=family,
        older_than=parse_duration(older_than, "--older-than") if older_than else None,
    )
    decisions = retention.plan(
        cloud.list_images(), now=datetime.now(UTC), refused=cloud.removal_refused
    )
    done = prune(cloud, decisions, dry_run=dry_run)
    app.emit(
        {
            "dry_run": dry_run,
            "keep": keep,
            "family_tag": app.settings.family_tag,
            "images": [decision.as_dict() for decision in done],
        },
        prune_text(done, dry_run),
    )


@cli.command("cleanup", context_settings={"help_option_names": ["--help"]})
@click.option(
    "--preserved",
    is_flag=True,
    help="Release what failed bakes kept because of --preserve-on-error instead.",
)
@click.option("--dry-run", is_flag=True, help="Only list what would be released.")
@global_options
@click.pass_context
def cleanup(ctx: click.Context, preserved: bool, dry_run: bool) -> None:
    """Release what bakes that died (SIGKILL, a crash, a reboot) left behind: processes,
    mounts, devices, volumes, snapshots no image uses. Running bakes are never touched."""
    app = App(ctx)
    require_root("aminate cleanup")
    results = clean_up(app.cloud, app.settings, preserved=preserved, dry_run=dry_run)
    lines = [line for result in results for line in result.describe(dry_run)]
    nothing = "no preserved bakes" if preserved else "no bake left anything behind"
    app.emit(
        {"dry_run": dry_run, "bakes": [result.as_dict() for result in results]},
        "\n".join(lines) or nothing,
    )


@cli.command(
    "shell",
    context_settings={"help_option_names": ["--help"], "ignore_unknown_options": True},
)
@click.argument("bake_id", metavar="BAKE_ID")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[-- COMMAND...]")
@global_options
@click.pass_context
def shell(ctx: click.Context, bake_id: str, command: tuple[str, ...]) -> None:
    """Open a shell (or run COMMAND) in the chroot of what a bake kept with
    --preserve-on-error; exits with its status."""
    app = App(ctx)
    ctx.exit(open_shell(app.cloud, app.settings, bake_id, command))


@cli.group("store", context_settings={"help_option_names": ["--help"]})
@global_options
def store_group() -> None:
    """Check or repair the cloud backend's registry (the local store)."""


@store_group.command("check", context_settings={"help_option_names": ["--help"]})
@global_options
@click.pass_context
def store_check(ctx: click.Context) -> None:
    """List what is inconsistent in the store (exit 1 if anything is)."""
    app = App(ctx)
    recorded = {record.bake_id for record in bake_records(app.settings).all()}
    findings = app.cloud.check_store(recorded)
    app.emit(
        {"consistent": not findings, "findings": findings},
        "\n".join(findings) or "the store is consistent",
    )
    if findings:
        click.echo(f"aminate: error: {len(findings)} inconsistencies in the store", err=True)
        if not app.json:
            click.echo("hint: 'aminate store repair' settles them", err=True)
        ctx.exit(EXIT_BAKE_FAILED)


@store_group.command("repair", context_settings={"help_option_names": ["--help"]})
@global_options
@click.pass_context
def store_repair(ctx: click.Context) -> None:
    """Rebuild the store's registry from its files and settle every inconsistency; a damaged
    database is set aside, never deleted. Refused while a bake runs."""
    app = App(ctx)
    records = bake_records(app.settings)
    running = [record.bake_id for record in records.all() if records.is_live(record.bake_id)]
    if running:
        raise ConflictError(
            f"bakes are running ({', '.join(running)})",
            hint="repair the store when they have ended",
        )
    done = app.cloud.repair_store({record.bake_id for record in records.all()})
    app.emit({"repaired": done}, "\n".join(done) or "nothing to repair")


@cli.group("cache", context_settings={"help_option_names": ["--help"]})
def cache_group() -> None:
    """The package cache bakes share: package lists and downloaded packages."""


def _size(size_bytes: int) -> str:
    return f"{size_bytes / 2**20:.1f} MiB"


@cache_group.command("show", context_settings={"help_option_names": ["--help"]})
@global_options
@click.pass_context
def cache_show(ctx: click.Context) -> None:
    """The cache's entries (one per provisioner and key), their age and size."""
    app = App(ctx)
    cache = PackageCache(app.settings.cache_dir)
    entries = [entry.usage() for entry in cache.entries()]
    total = sum(entry.size_bytes for entry in entries)
    lines = [f"{cache.directory}: {len(entries)} entries, {_size(total)}"]
    for entry in entries:
        fetched = (
            datetime.fromtimestamp(entry.index_fetched, UTC).isoformat(timespec="seconds")
            if entry.index_fetched
            else "never"
        )
        lines.append(
            f"  {entry.path.name}  lists fetched {fetched}, {entry.packages} packages, "
            f"{_size(entry.size_bytes)}"
        )
    app.emit(
        {
            "directory": str(cache.directory),
            "size_bytes": total,
            "entries": [entry.as_dict() for entry in entries],
        },
        "\n".join(lines),
    )


@cache_group.command("clear", context_settings={"help_option_names": ["--help"]})
@global_options
@click.pass_context
def cache_clear(ctx: click.Context) -> None:
    """Remove everything in the cache that no running bake uses."""
    app = App(ctx)
    cache = PackageCache(app.settings.cache_dir)
    freed, in_use = cache.clear()
    text = f"freed {_size(freed)}"
    if in_use:
        text += f"; kept {len(in_use)} package lists in use by running bakes"
    app.emit({"freed_bytes": freed, "in_use": [str(p) for p in in_use]}, text)


@cli.command("export", context_settings={"help_option_names": ["--help"]})
@click.argument("image_id", metavar="ID")
@click.argument("file", metavar="FILE.raw", type=click.Path(path_type=Path))
@global_options
@click.pass_context
def export(ctx: click.Context, image_id: str, file: Path) -> None:
    """Write image ID's disk to FILE.raw (sparse)."""
    app = App(ctx)
    cloud = app.cloud
    cloud.export_image(image_id, file.resolve())
    app.emit({"image_id": image_id, "path": str(file.resolve())}, str(file))


@cli.command("plugins", context_settings={"help_option_names": ["--help"]})
@global_options
@click.pass_context
def plugins(ctx: click.Context) -> None:
    """List the loaded plugins and the hooks each implements."""
    app = App(ctx)
    loaded = app.hooks.loaded
    data = {
        "plugins": [
            {
                "name": p.name,
                "distribution": p.distribution,
                "version": p.version,
                "builtin": p.builtin,
                "hooks": list(p.hooks),
            }
            for p in loaded.infos
        ],
        "failed": [
            {"name": f.name, "distribution": f.distribution, "error": f.error}
            for f in loaded.failures
        ],
        "disabled": loaded.disabled,
    }
    lines = [f"{p.name} ({p.distribution} {p.version}): {', '.join(p.hooks)}" for p in loaded.infos]
    lines += [f"{f.name} ({f.distribution}): FAILED TO LOAD: {f.error}" for f in loaded.failures]
    lines += [f"{name}: disabled" for name in loaded.disabled]
    app.emit(data, "\n".join(lines))


@cli.group("config", context_settings={"help_option_names": ["--help"]})
@global_options
def config_group() -> None:
    """Show the configuration."""


@config_group.command("show", context_settings={"help_option_names": ["--help"]})
@global_options
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """Print every effective setting and where it came from."""
    app = App(ctx)
    rows = app.config.rows()
    data = {
        "files": [str(path) for path in app.config.files],
        "environment": app.config.environment,
        "settings": [
            {"key": key, "value": json_value(value), "source": source}
            for key, value, source in rows
        ],
    }
    app.emit(data, config_text(app.config.files, app.config.environment, rows))


def _requested(argv: Sequence[str], flag: str) -> bool:
    return flag in argv


def _output_json(argv: Sequence[str]) -> bool:
    for index, word in enumerate(argv):
        if word == "--output=json" or (
            word == "--output" and argv[index + 1 : index + 2] == ["json"]
        ):
            return True
    return False


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: runs a command, maps every outcome to an exit code and one line."""
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = _output_json(args)
    debug = _requested(args, "--debug")
    ctx_meta: dict[str, Any] = {}
    try:
        hooks = load_plugins()
        know_host_packages(hooks.host_packages(read_os_release(Path("/"))))
        add_plugin_options(bake, hooks.setting_declarations())
        add_creator_options(base_create, hooks.base_creators)
        with interrupts_raised(), cli.make_context("aminate", args, obj=hooks) as ctx:
            ctx_meta = ctx.meta
            cli.invoke(ctx)
        code = 0
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        code = report_failure(
            exc.format_message(),
            None,
            EXIT_BAD_REQUEST,
            as_json,
            ctx_meta.get(BAKE_KEY),
            hint="see 'aminate --help'",
        )
    except AminatorError as exc:
        code = report_failure(
            describe(exc), exc, exc.exit_code, as_json, ctx_meta.get(BAKE_KEY), debug=debug
        )
    except Interrupted as exc:
        runner = ctx_meta.get(BAKE_KEY)
        held = "kept" if runner is not None and runner.preserved else "released"
        code = report_failure(
            f"{exc}; {held} what the bake held", None, exc.exit_code, as_json, runner
        )
    except BrokenPipeError:
        # The reader of stdout went away (`aminate images | head`): not the engine's failure.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_BAKE_FAILED
    except KeyboardInterrupt:
        code = report_failure(
            "interrupted by SIGINT", None, EXIT_SIGINT, as_json, ctx_meta.get(BAKE_KEY)
        )
    except Exception as exc:
        code = report_failure(
            f"internal error: {type(exc).__name__}: {exc}",
            None,
            EXIT_BAKE_FAILED,
            as_json,
            ctx_meta.get(BAKE_KEY),
            debug=debug,
            hint="rerun with --debug for the traceback",
        )
    sys.exit(code)
