"""Commented reverie.yaml presets shipped with the package (`reverie init DIR --preset NAME` writes one): default
(every key with its default), demo (the demo cycle's settings), tiny (seconds per cycle, for tests). Torch-free."""

from __future__ import annotations

from importlib import resources

from reverie.errors import ReverieError

DEFAULT_PRESET = "default"
SUFFIX = ".yaml"


def preset_names() -> list[str]:
    return sorted(entry.name.removesuffix(SUFFIX) for entry in resources.files(__name__).iterdir()
                  if entry.name.endswith(SUFFIX))


def preset_text(name: str) -> str:
    """The preset's YAML text. Only a listed name is read, so a name from the command line cannot be a path."""
    names = preset_names()
    if name not in names:
        raise ReverieError(f"preset {name!r}: unknown (choose from {', '.join(names)})")
    return resources.files(__name__).joinpath(name + SUFFIX).read_text(encoding="utf-8")
