"""The docs stay true to the code: every doc the code cites exists in ``docs/`` with the cited section, every module
the docs name exists, and the architecture page states the real layer contract and command table."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGE = "mtlora_deploy"

# `docs/deploy.md, "Merge"`, also with the path in backticks, several sections, or JSON-escaped quotes
CITATION = re.compile(
    r'(?<![\w/.-])docs/(?P<page>[\w.-]+\.md)`?(?P<sections>(?:,\s*\\?"[^"\\\n]+\\?")*)',
)
SECTION = re.compile(r'\\?"([^"\\\n]+)\\?"')
# Citations of specs that live outside the repository (the page names they had, a spec folder, "the spec's")
OUTSIDE_SPEC = re.compile(r"(?<!docs/)\b(?:deploy|model|training|mtl_lora|data|style)\.md\b|\bspec/|\bthe spec's\b")
MODULE_PATH = re.compile(r"(?<![\w./-])(?:mtlora_deploy|tests|benchmarks)/[\w./-]*\w")
DOTTED = re.compile(r"(?<![\w.])mtlora_deploy(?:\.[A-Za-z_]\w*)+")


def code_files() -> list[Path]:
    """Every file whose text may cite the docs: package sources and data, tests, benchmarks (not their recorded
    results), the README and the build files. This test file itself is left out (its patterns would match)."""
    found = [ROOT / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml"]
    for pattern in ("mtlora_deploy/**/*", "tests/**/*.py", "benchmarks/**/*"):
        found += [p for p in ROOT.glob(pattern) if p.suffix in (".py", ".json", ".yaml", ".md")]
    skip, results = Path(__file__).resolve(), ROOT / "benchmarks" / "results"
    return sorted(p for p in found if p.is_file() and p.resolve() != skip and results not in p.parents)


def doc_pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


@cache
def headings(page: Path) -> frozenset[str]:
    """The text of every Markdown heading of ``page`` (fenced code blocks skipped)."""
    found, fenced = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"#+\s+(.*\S)", line)):
            found.add(match.group(1))
    return frozenset(found)


def citations(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """``[(page, (section, ...))]`` of every ``docs/PAGE.md[, "Section"...]`` citation in ``text``."""
    return [(m["page"], tuple(SECTION.findall(m["sections"]))) for m in CITATION.finditer(text)]


def citation_problems(where: str, text: str, docs: Path = DOCS) -> list[str]:
    """One line per cited page or section that does not exist in ``docs``."""
    problems = []
    for page, sections in citations(text):
        path = docs / page
        if not path.is_file():
            problems.append(f"{where}: cites docs/{page}, which does not exist")
            continue
        problems += [
            f'{where}: cites docs/{page}, "{s}", which has no such heading' for s in sections if s not in headings(path)
        ]
    return problems


def _defined_names(body: list[ast.stmt]) -> set[str]:
    """Names a module (or class) body defines: functions, classes, assignments and imports."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def unresolved_module(dotted: str, root: Path = ROOT) -> str | None:
    """None when ``mtlora_deploy.a.b[.name[.attr]]`` names a module of the package, optionally followed by a name
    its top level defines and an attribute of that class; else what is missing. Read from the source, not imported."""
    parts = dotted.split(".")
    for count in range(len(parts), 0, -1):
        base = root.joinpath(*parts[:count])
        module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if module.is_file():
            break
    else:
        return f"{dotted}: no such module"
    rest = parts[count:]
    if not rest:
        return None
    tree = ast.parse(module.read_text())
    if rest[0] not in _defined_names(tree.body):
        return f"{dotted}: {'.'.join(parts[:count])} defines no {rest[0]}"
    if len(rest) == 1:
        return None
    owner = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == rest[0]), None)
    if len(rest) > 2 or owner is None or rest[1] not in _defined_names(owner.body):
        return f"{dotted}: {'.'.join(parts[: count + 1])} has no attribute {'.'.join(rest[1:])}"
    return None


def module_problems(page: Path) -> list[str]:
    """Paths under mtlora_deploy/, tests/, benchmarks/ and dotted mtlora_deploy names on ``page`` that do not exist."""
    text = page.read_text()
    problems = [f"{page.name}: {p} does not exist" for p in MODULE_PATH.findall(text) if not (ROOT / p).exists()]
    problems += [f"{page.name}: {why}" for d in DOTTED.findall(text) if (why := unresolved_module(d))]
    return problems


def test_the_scanners_see_the_real_citations_and_references():
    """So that the checks below cannot pass on nothing."""
    cited = [c for path in code_files() for c in citations(path.read_text())]
    assert len(cited) >= 20 and sum(bool(sections) for _, sections in cited) >= 10
    assert sum(len(DOTTED.findall(p.read_text())) for p in doc_pages()) >= 20


def test_the_checks_report_what_is_missing(tmp_path):
    """On a made-up docs folder and package: a missing page, section, module, name and class attribute."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "deploy.md").write_text("# Deployment\n\n## Merge\n\n```\n## Export\n```\n")
    text = 'see docs/deploy.md, "Merge" and `docs/deploy.md`, "Merge", "Export" and docs/nowhere.md, and a/docs/x.md'
    assert citations(text) == [("deploy.md", ("Merge",)), ("deploy.md", ("Merge", "Export")), ("nowhere.md", ())]
    assert citations('"(docs/deploy.md, \\"Export\\")"') == [("deploy.md", ("Export",))]
    assert citation_problems("x", text, docs) == [
        'x: cites docs/deploy.md, "Export", which has no such heading',
        "x: cites docs/nowhere.md, which does not exist",
    ]
    module = tmp_path / "mtlora_deploy" / "pkg" / "mod.py"
    module.parent.mkdir(parents=True)
    for package in module.parents[:2]:
        (package / "__init__.py").write_text("")
    module.write_text("from a import b as c\nX: int = 1\n\n\nclass K:\n    def m(self): ...\n")
    for name in ("pkg", "pkg.mod", "pkg.mod.c", "pkg.mod.X", "pkg.mod.K", "pkg.mod.K.m"):
        assert unresolved_module(f"mtlora_deploy.{name}", tmp_path) is None, name
    assert "pkg.mod defines no nothing" in unresolved_module("mtlora_deploy.pkg.mod.nothing", tmp_path)
    assert "pkg.mod.K has no attribute nothing" in unresolved_module("mtlora_deploy.pkg.mod.K.nothing", tmp_path)
    assert "no attribute" in unresolved_module("mtlora_deploy.pkg.mod.X.real", tmp_path)
    assert OUTSIDE_SPEC.search("(deploy.md 1)") and OUTSIDE_SPEC.search("see spec/reference_keys.tsv")
    assert not OUTSIDE_SPEC.search('(docs/deploy.md, "Merge") benchmarks/README.md metadata.md')


def test_every_doc_the_code_cites_exists_with_its_section():
    problems = [p for path in code_files() for p in citation_problems(str(path.relative_to(ROOT)), path.read_text())]
    assert not problems, "\n".join(problems)


def test_the_code_cites_no_spec_outside_the_repository():
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in code_files()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if OUTSIDE_SPEC.search(line)
    ]
    assert not found, "cite docs/PAGE.md instead:\n" + "\n".join(found)


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: p.name)
def test_doc_cross_references_and_module_paths_exist(page):
    problems = citation_problems(page.name, page.read_text()) + module_problems(page)
    assert not problems, "\n".join(problems)


def test_the_index_links_every_page():
    index = (DOCS / "README.md").read_text()
    missing = [p.name for p in doc_pages() if p.name != "README.md" and f"]({p.name})" not in index]
    assert not missing, f"docs/README.md does not link {missing}"


def test_architecture_states_the_layer_contract_of_pyproject():
    """The fenced layer list on docs/architecture.md is the import-linter contract's, line for line."""
    contract = re.search(r"^layers = \[\n(.*?)^\]", (ROOT / "pyproject.toml").read_text(), re.S | re.M)
    layers = re.findall(r'"([^"]+)"', contract.group(1))
    page = (DOCS / "architecture.md").read_text()
    blocks = [block.strip().splitlines() for block in re.findall(r"```\n(.*?)```", page, re.S)]
    assert layers in blocks, f"docs/architecture.md has no fenced block listing the layers {layers}"


def test_architecture_names_every_command():
    from mtlora_deploy.cli.main import COMMANDS

    page = (DOCS / "architecture.md").read_text()
    missing = [name for name in COMMANDS if f"| `mtlora {name}` |" not in page]
    assert not missing, f"docs/architecture.md, 'Commands' has no row for {missing}"
