"""Reading a data file named in the config: a built-in name, or a path relative to the workspace."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from reverie.errors import ReverieError


def read_builtin(packaged: str) -> str:
    """A data file shipped inside the package, e.g. 'demo/needles.jsonl'."""
    return resources.files("reverie.data").joinpath(packaged).read_text()


def read_data_text(spec: str, base_dir: Path, key: str, builtin: tuple[str, str], expected: str) -> tuple[str, str]:
    """Return (text, origin) for `spec`: builtin[0] selects the packaged file builtin[1], else a UTF-8 file.

    Errors name the config key, the path tried, and what is allowed.
    """
    name, packaged = builtin
    if spec == name:
        return read_builtin(packaged), f"built-in {packaged}"
    path = base_dir / Path(spec).expanduser()
    if not path.is_file():
        raise ReverieError(f"{key}: {path} does not exist (use '{name}' or {expected})")
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except UnicodeDecodeError:
        raise ReverieError(f"{key}: {path} is not UTF-8 text") from None
