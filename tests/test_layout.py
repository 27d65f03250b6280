"""The house rules that keep the code readable: short functions, no import cycles, and links in the
README and the guides that lead somewhere."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "freyvae_cli"
MAX_LINES = 60


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        found[name] = ast.parse(path.read_text())
    return found


def test_no_function_in_the_package_is_over_60_lines():
    long = [f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
            for name, tree in modules().items() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_LINES]
    assert not long


def imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The package's modules that `name` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            base = node.module if node.level == 0 else name.rsplit(".", node.level)[0] + "." + node.module
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in known and m != name}


def test_no_import_cycle():
    trees = modules()
    known = set(trees)
    graph = {name: imports(name, tree, known) for name, tree in trees.items()}
    # The cli package's __init__ imports its command modules, which import cli.common: that is a
    # package importing its parts, not a cycle between concerns.
    graph["freyvae_cli.cli"] -= {m for m in known if m.startswith("freyvae_cli.cli.")}

    def cycle_from(start: str, path: list[str]) -> list[str] | None:
        for nxt in sorted(graph[path[-1]]):
            if nxt == start:
                return path + [nxt]
            if nxt not in path:
                found = cycle_from(start, path + [nxt])
                if found:
                    return found
        return None

    cycles = [c for c in (cycle_from(m, [m]) for m in sorted(graph)) if c]
    assert not cycles, " -> ".join(cycles[0])


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", documents(), ids=lambda p: p.name)
def test_every_relative_link_and_image_resolves(doc):
    text = doc.read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"<img [^>]*src=\"([^\"]+)\"", text)
    relative = [t for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    assert relative or doc.name != "README.md", "the README links to nothing"
    missing = []
    for target in relative:
        path, _, anchor = target.partition("#")
        resolved = (doc.parent / path).resolve()
        if not resolved.exists():
            missing.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            missing.append(target)
    assert not missing, f"{doc.name}: {missing}"


def anchors(doc: Path) -> set[str]:
    """GitHub's anchors for a Markdown file's headings."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", doc.read_text(), flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_the_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 180


def mapped_files(doc: Path) -> set[str]:
    """The files the tree in docs/layout.md names, as paths: each line's first word, under the
    folders (words ending in /) indented above it."""
    block = doc.read_text().split("```")[1]
    folders: list[tuple[int, str]] = []
    found = set()
    for line in block.splitlines():
        if not line.strip():
            continue
        indent, word = len(line) - len(line.lstrip()), line.split()[0]
        if not re.fullmatch(r"[\w.]+/?", word):
            continue  # a description's continuation line
        while folders and folders[-1][0] >= indent:
            folders.pop()
        path = "".join(name for _, name in folders) + word
        if word.endswith("/"):
            folders.append((indent, word))
        else:
            found.add(path)
    return found


def test_the_layout_guide_names_every_module_and_no_other():
    actual = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")}
    named = {p for p in mapped_files(ROOT / "docs" / "layout.md") if p.endswith(".py") and p.startswith("freyvae_cli/")}
    assert not actual - named, f"docs/layout.md leaves out {sorted(actual - named)}"
    assert not named - actual, f"docs/layout.md names modules that do not exist: {sorted(named - actual)}"
