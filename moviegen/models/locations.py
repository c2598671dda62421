"""Where a model setting points: a registry name, a local folder or a hub id (one rule for every kind).

The adherence scorer, the soundtrack model and the moderator are each named the same ways; video
models have their own resolver (``registry.resolve_model``), which also reads a folder's pipeline
class to pick the family.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path


def resolve_location(
    value: str,
    names: Mapping[str, str],
    *,
    what: str,
    holds: str,
    error: type[ValueError] = ValueError,
    hub_id_allowed: Callable[[str], bool] = lambda _: True,
) -> str:
    """The location ``from_pretrained`` is given for a model setting.

    A registry name (``names``: name -> hub or tiny id) gives its id; an id of the registry, a local
    folder holding a saved model (config.json or model_index.json) and an ``owner/name`` hub id that
    ``hub_id_allowed`` accepts are used as given. Anything else raises ``error`` naming ``what`` and
    what a folder must hold.
    """
    value = value.strip()
    if value in names:
        return names[value]
    if value in names.values():
        return value
    path = Path(os.path.expanduser(value))
    if path.exists():
        if path.is_dir() and any((path / f).is_file() for f in ("config.json", "model_index.json")):
            return str(path.resolve())
        raise error(f"{what} folder {value!r} holds no config.json: save {holds} there with save_pretrained")
    if value.count("/") == 1 and all(value.split("/")) and not value.startswith((".", "~")) and hub_id_allowed(value):
        return value
    raise error(
        f"unknown {what} {value!r}: use one of {', '.join(sorted(names))}, a hub id, "
        f"or a local folder holding {holds} (save_pretrained)"
    )
