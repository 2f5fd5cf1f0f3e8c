"""Imports flow one way: entry points -> cycle -> phases -> engines -> stores. Phases hand off only through the
registry, the stores need no torch, and no test module imports another (what tests share is in conftest.py)."""

from __future__ import annotations

from pathlib import Path

from conftest import HEAVY, PACKAGE, import_lines, module_name

TESTS = Path(__file__).parent

# Bottom to top: a module may import from its own layer or a lower one.
LAYERS = ("stores", "engines", "phases", "cycle", "entry points")

# Every module of the package, placed by the longest key that is its name or a dotted prefix of it. A module no
# key places fails test_every_module_has_a_layer: a new module is placed here when it is added.
LAYER_OF = {
    # entry points: the CLI, the server and the report sit on top, and nothing below imports them
    "reverie.__main__": "entry points",
    "reverie.cli": "entry points",
    "reverie.cli_data": "entry points",
    "reverie.cli_eval": "entry points",
    "reverie.cli_memory": "entry points",
    "reverie.cli_seal": "entry points",
    "reverie.cli_seal_arc": "entry points",
    "reverie.cli_rm": "entry points",
    "reverie.cli_rhythm": "entry points",
    "reverie.serving": "entry points",
    "reverie.reporting": "entry points",
    # the cycle: the one place that knows the order Learn -> Compress -> Dream -> Gate
    "reverie.cycle": "cycle",
    "reverie.rhythms": "cycle",  # which parts of the cycle run when: slots that run phases or memory actions
    "reverie.retention": "cycle",  # `reverie gc`: which versions keep their weights, deleted in a kill-safe order
    # the phases, and the modules only phases use
    "reverie.phases": "phases",
    "reverie.generator": "phases",
    "reverie.arc_generator": "phases",
    "reverie.reward_models": "phases",
    "reverie.export": "phases",
    "reverie.model_card": "phases",
    # engines: models, training, generation, evaluation, retrieval
    "reverie.engines": "engines",
    "reverie.memory.retrieval": "engines",
    # stores, and the torch-free support modules every layer uses
    "reverie": "stores",  # the package itself (its version)
    "reverie.data": "stores",
    "reverie.registry": "stores",
    "reverie.workspace": "stores",
    "reverie.artifacts": "stores",
    "reverie.memory": "stores",  # the package itself: its modules sit in two layers, each placed below
    "reverie.memory.store": "stores",
    "reverie.config": "stores",
    "reverie.validation": "stores",
    "reverie.errors": "stores",
    "reverie.metrics": "stores",
    "reverie.stats": "stores",
    "reverie.progress": "stores",
    "reverie.strategy_names": "stores",
    "reverie.presets": "stores",
    "reverie.cycle_inputs": "stores",  # a cycle's frozen inputs: data and memory documents, no torch
}
# Keys that place a package's own __init__ only, not the modules under it.
PACKAGE_ONLY = {"reverie", "reverie.memory"}

# The modules under reverie.phases that are no phase: the interface, the typed hand-offs, and the strategy table
# with what strategies share (each name places the modules under it too). Every other module under
# reverie.phases is a phase, and nothing in the phases layer imports a phase but the phase itself: phases hand
# off through the registry. (reverie.generator and reverie.model_card are in the phases layer but are no phases.)
SHARED_PHASE_MODULES = ("reverie.phases.base", "reverie.phases.outputs", "reverie.phases.strategies")

# Violations in src/ today, each allowed by (importer, imported) until the code is fixed; then delete its entry.
# test_known_violations_still_occur fails on an entry that no longer occurs, so this list only shrinks.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


FILES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str | None:
    keys = [k for k in LAYER_OF if module == k or (k not in PACKAGE_ONLY and module.startswith(k + "."))]
    return LAYER_OF[max(keys, key=len)] if keys else None


def is_phase(module: str) -> bool:
    shared = any(module == name or module.startswith(name + ".") for name in SHARED_PHASE_MODULES)
    return module.startswith("reverie.phases.") and not shared


def violations(files: dict[str, Path]) -> list[tuple[str, str, str]]:
    """(importer, imported, what is wrong) for every import in `files` (module -> path) that breaks a rule."""
    found = []
    for module, path in files.items():
        layer = layer_of(module)
        shown = path.relative_to(PACKAGE.parent) if path.is_relative_to(PACKAGE) else path.name
        for line, imported in import_lines(path, module):
            where = f"{shown}:{line}: {module} ({layer}) imports {imported}"
            if imported.split(".")[0] in HEAVY:
                if layer == "stores":
                    found.append((module, imported, f"{where} (a heavy dependency): the stores need no torch"))
            elif imported == "reverie" or imported.startswith("reverie."):
                target = layer_of(imported)
                if target is None:
                    found.append((module, imported, f"{where}, which no layer places"))
                elif layer is not None and LAYERS.index(target) > LAYERS.index(layer):
                    found.append((module, imported, f"{where} ({target}), a layer above {layer}"))
                elif layer == "phases" and is_phase(imported) and imported != module:
                    found.append((module, imported, f"{where} ({target}): phases hand off through the registry, "
                                                    "never by importing each other"))
    return found


def imports_between_tests(paths: list[Path]) -> list[str]:
    test_modules = {path.stem for path in paths if path.stem.startswith("test_")}
    found = [f"{path.name}:{line} imports {imported}"
             for path in paths for line, imported in import_lines(path, path.stem)
             if imported.removeprefix("tests.").split(".")[0] in test_modules]
    return list(dict.fromkeys(found))  # `from a import b, c` is one import


def test_every_module_has_a_layer() -> None:
    unplaced = [module for module in FILES if layer_of(module) is None]
    assert not unplaced, f"{unplaced}: place each in LAYER_OF in {Path(__file__).name}"


def test_imports_follow_the_layer_order() -> None:
    broken = [why for importer, imported, why in violations(FILES) if (importer, imported) not in KNOWN_VIOLATIONS]
    assert not broken, "\n".join(broken)


def test_known_violations_still_occur() -> None:
    fixed = KNOWN_VIOLATIONS - {(importer, imported) for importer, imported, _ in violations(FILES)}
    assert not fixed, f"{sorted(fixed)} no longer occur: delete them from KNOWN_VIOLATIONS"


def test_no_test_module_imports_another() -> None:
    found = imports_between_tests(sorted(TESTS.rglob("*.py")))
    assert not found, "\n".join(found) + "\nmove what they share into tests/conftest.py"


def test_each_rule_names_what_breaks_it(tmp_path: Path) -> None:
    # The tests above pass on a clean tree; on these files each rule must fire, and only where it should.
    probes = {
        "reverie.engines.probe": "from reverie.phases.gate import Gate\nfrom reverie.data.knowledge import QA\n",
        "reverie.data.probe": "def load():\n    import torch\n",
        "reverie.phases.probe": "from . import gate\nfrom .base import PhaseResult\nfrom reverie import generator\n",
        "reverie.cli_probe": "from reverie.cycle import run_cycle\nfrom reverie.not_placed import x\n",
    }
    files = {}
    for module, text in probes.items():
        files[module] = tmp_path / f"{module.replace('.', '_')}.py"
        files[module].write_text(text)
    found = violations(files)
    assert [(importer, imported) for importer, imported, _ in found] == [
        ("reverie.engines.probe", "reverie.phases.gate"), ("reverie.data.probe", "torch"),
        ("reverie.phases.probe", "reverie.phases.gate"), ("reverie.cli_probe", "reverie.not_placed")]
    assert found[0][2] == ("reverie_engines_probe.py:1: reverie.engines.probe (engines) imports reverie.phases.gate "
                           "(phases), a layer above engines")
    assert layer_of("reverie.cli_probe") is None and layer_of("reverie.memory.embeddings") is None
    (tmp_path / "test_probe.py").write_text("from conftest import make_workspace\nfrom test_cycle import x\n")
    assert imports_between_tests([tmp_path / "test_probe.py", TESTS / "test_cycle.py"]) == [
        "test_probe.py:2 imports test_cycle"]
