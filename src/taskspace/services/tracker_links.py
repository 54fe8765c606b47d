"""A project's link to its tracker: the plugin's typed config, with its credentials sealed by
the vault (the rest is stored as plain JSON), and the tracker instance built from both."""

from __future__ import annotations

import json
import typing
from typing import Any

from pydantic import SecretStr, ValidationError

from taskspace.core.errors import InvalidInput
from taskspace.db.models import Project
from taskspace.plugins.registry import load_tracker
from taskspace.plugins.trackers.base import LocalTickets, Tracker
from taskspace.services.vault import Sealed, Vault

#: Key of the plain config listing which settings are sealed (so they can be shown as ***).
SEALED_NAMES = "_sealed"


def _secret_fields(model: type) -> set[str]:
    names = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if annotation is SecretStr or SecretStr in typing.get_args(annotation):
            names.add(name)
    return names


def _context(project_key: str) -> str:
    return f"tracker:{project_key}"


def is_external(project: Project) -> bool:
    return not issubclass(load_tracker(project.tracker), LocalTickets)


def validate_config(tracker: str, config: dict[str, Any], *, project_key: str) -> Any:
    """The plugin's config model of ``config`` (a GitLab/GitHub ``key_prefix`` is the project
    key); InvalidInput naming each problem — never echoing a value, which may be a secret."""
    cls = load_tracker(tracker)
    if not isinstance(config, dict):
        raise InvalidInput("The tracker config must be a JSON object.",
                           hint='Give an object of the tracker\'s settings, e.g. {"base_url": "..."}.',
                           field="tracker_config")
    if "key_prefix" in cls.config_model.model_fields:
        config = {**config, "key_prefix": project_key}
    try:
        return cls.config_model(**config)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"The {tracker} tracker config is not valid: {problems}.",
                           hint="See the tracker's settings in the README.", field="tracker_config") from None


def store(project: Project, vault: Vault, tracker: str, config: Any) -> None:
    """Write the link on ``project``: credentials sealed, the rest plain."""
    secrets = _secret_fields(type(config))
    plain = config.model_dump(mode="json", exclude=secrets | {"key_prefix"})
    hidden = {name: value.get_secret_value() for name in secrets
              if (value := getattr(config, name)) is not None}
    project.tracker, project.tracker_config = tracker, {**plain, SEALED_NAMES: sorted(hidden)}
    if hidden:
        sealed = vault.seal(json.dumps(hidden), context=_context(project.key))
        project.tracker_sealed, project.tracker_wrapped, project.tracker_key_id = (
            sealed.ciphertext, sealed.wrapped_key, sealed.key_id)
    else:
        project.tracker_sealed = project.tracker_wrapped = project.tracker_key_id = None


def _sealed(project: Project) -> Sealed | None:
    if project.tracker_sealed is None or project.tracker_wrapped is None or project.tracker_key_id is None:
        return None
    return Sealed(project.tracker_sealed, project.tracker_wrapped, project.tracker_key_id)


def tracker_for(project: Project, vault: Vault) -> Tracker:
    """The project's tracker plugin, configured (credentials opened from the vault)."""
    cls = load_tracker(project.tracker)
    config = dict(project.tracker_config or {})
    config.pop(SEALED_NAMES, None)
    sealed = _sealed(project)
    if sealed is not None:
        config.update(json.loads(vault.open(sealed, context=_context(project.key))))
    if "key_prefix" in cls.config_model.model_fields:
        config["key_prefix"] = project.key
    return cls(cls.config_model(**config))


def rewrap(project: Project, vault: Vault) -> bool:
    """Re-wrap the sealed credentials under the vault's current key; False if they are."""
    sealed = _sealed(project)
    if sealed is None or sealed.key_id == vault.key_id:
        return False
    fresh = vault.rewrap(sealed, context=_context(project.key))
    project.tracker_wrapped, project.tracker_key_id = fresh.wrapped_key, fresh.key_id
    return True


def describe(project: Project) -> dict[str, Any]:
    """What may be shown of a link: the plain settings and the names of the sealed ones."""
    shown = dict(project.tracker_config or {})
    for name in shown.pop(SEALED_NAMES, []):
        shown[name] = "***"
    return shown
