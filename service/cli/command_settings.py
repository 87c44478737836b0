"""The settings a CLI command runs with: ``KEYLEDGER_*``, else a running ``keyledger dev``.

Each command names the settings it needs; the ones unset are taken from the
dev folder (``KEYLEDGER_DATA_DIR``, default ``./.keyledger``) when a
``keyledger dev`` runs there, and every one still missing is reported at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from service.cli import dev_folder
from service.settings import PREFIX, Settings, SettingsError


def variable(field: str) -> str:
    """The environment variable of a settings field."""
    return PREFIX + field.upper()


def settings_help(needs: Sequence[str], optional: Sequence[str] = ()) -> str:
    """The ``--help`` epilog: which settings the command reads, and where else they come from."""
    text = "settings: " + ", ".join(variable(f) for f in needs)
    if optional:
        text += "; optional: " + ", ".join(variable(f) for f in optional)
    return (
        text + ". Unset ones are read from a `keyledger dev` running in KEYLEDGER_DATA_DIR"
        " (default ./.keyledger)."
    )


def cli_settings(
    needs: Sequence[str],
    optional: Sequence[str] = (),
    *,
    from_dev: bool = True,
    **overrides: object,
) -> Settings:
    """Settings for a command needing ``needs`` (and using ``optional`` when known).

    ``from_dev=False`` reads ``KEYLEDGER_*`` only (``serve``: a deployment must not
    attach itself to a developer's folder).
    """
    settings = Settings.from_env(None, **overrides)
    wanted = [*needs, *optional]
    if from_dev and any(getattr(settings, field) is None for field in wanted):
        settings = _from_running_dev(settings, wanted)
    missing = [variable(field) for field in needs if getattr(settings, field) is None]
    if missing:
        hint = (
            "export them, or run this next to a running `keyledger dev` (data folder"
            f" {settings.data_dir}, KEYLEDGER_DATA_DIR)"
            if from_dev
            else "export them"
        )
        raise SettingsError(f"missing settings: {', '.join(missing)} ({hint})")
    return settings


def _from_running_dev(settings: Settings, wanted: Sequence[str]) -> Settings:
    urls = dev_folder.read_urls(settings.data_dir)
    if not urls:
        return settings
    changes: dict[str, object] = {}
    for field in ("database_url", "nats_url"):
        if field in wanted and getattr(settings, field) is None and urls.get(field):
            changes[field] = urls[field]
            if field == "nats_url":
                # The stream and subjects go with the server: a dev pointed at a shared
                # NATS may use its own (KEYLEDGER_NATS_STREAM / _SUBJECT_PREFIX).
                for name in ("nats_stream", "nats_subject_prefix"):
                    if urls.get(name):
                        changes[name] = urls[name]
    if "pepper" in wanted and settings.pepper is None:
        changes["pepper"] = dev_folder.pepper(settings.data_dir)
    return settings.replace(**changes) if changes else settings
