"""The README's Layout section names every module and folder of the package, so it cannot drift from the tree."""

from __future__ import annotations

from pathlib import Path

import reverie

README = Path(__file__).resolve().parents[1] / "README.md"


def test_layout_names_every_module() -> None:
    text = README.read_text(encoding="utf-8")
    layout = text[text.index("## Layout"):].split("```")[1]
    package = Path(reverie.__file__).parent
    missing = [str(path.relative_to(package)) for path in sorted(package.rglob("*.py"))
               if path.name != "__init__.py" and path.name not in layout
               and not (path.parent != package and path.parent.name == "suites")]  # one per suite: named as a group
    folders = [f"{path.name}/" for path in sorted(package.rglob("*"))
               if path.is_dir() and path.name not in ("__pycache__", "demo") and f"{path.name}/" not in layout]
    assert not missing and not folders, f"README Layout does not name {missing + folders}"
