"""No import cycle between any two modules of the package, the package root and every ``__init__`` included.

pyproject's import-linter contracts order packages and keep siblings apart; this checks the finer property on
grimp's graph of every import the code makes, function-level (lazy) and ``TYPE_CHECKING`` ones included: a lazy
import does not make a cycle harmless, it only moves the half-initialised-module failure to whichever module
happens to be imported first. ``make check`` runs this file beside lint-imports.
"""

from __future__ import annotations

import grimp


def find_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every import cycle as a module chain ``[a, b, ..., a]``: the shortest one through each import, one per set."""
    cycles: dict[frozenset[str], list[str]] = {}
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is not None:
                cycle = [importer, *back]
                cycles.setdefault(frozenset(cycle), cycle)
    return sorted(cycles.values(), key=lambda cycle: (len(cycle), cycle))


def test_package_has_no_import_cycle():
    cycles = find_cycles(grimp.build_graph("mtlora_deploy", cache_dir=None))
    assert not cycles, f"{len(cycles)} import cycle(s): " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_cycles_closed_by_lazy_imports_and_through_package_roots_are_named(tmp_path, monkeypatch):
    """The finder sees what a module-top-only scan misses: a cycle closed inside a function, one through a root."""
    package = tmp_path / "cyclepkg"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "def load():\n    from cyclepkg.sub import merge\n",  # root -> merge (lazy) -> root
        "a.py": "import cyclepkg.b\n",
        "b.py": "def f():\n    from cyclepkg import a\n",  # a -> b -> a, closed by a function-level import
        "leaf.py": "",
        "sub/__init__.py": "",
        "sub/merge.py": "from cyclepkg import load, leaf\n",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))

    cycles = find_cycles(grimp.build_graph("cyclepkg", cache_dir=None))

    assert cycles == [
        ["cyclepkg", "cyclepkg.sub.merge", "cyclepkg"],
        ["cyclepkg.a", "cyclepkg.b", "cyclepkg.a"],
    ]
