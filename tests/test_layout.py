"""The package layout holds: the runtime (harness/ and methods/ outside harness/train) never imports a trainer or
data generator, and no two runtime modules import each other, directly or around a longer loop. The documentation
holds too: a README of at most 150 lines that starts with the two commands, the docs/ pages it maps, every relative
link resolving, and no dated measurement outside results/bench/latest.md."""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "methods")
TRAIN = "harness.train"


def is_train(name: str) -> bool:
    return name == TRAIN or name.startswith(TRAIN + ".")


def modules() -> dict[str, Path]:
    """Every module of the two packages by dotted name (a package by its own name, for its __init__.py)."""
    found = {}
    for package in PACKAGES:
        for file in sorted((ROOT / package).rglob("*.py")):
            parts = file.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return found


def imports(name: str, file: Path, known: set[str]) -> list[tuple[str, int]]:
    """(module, line) for every import statement of `file`, wherever it is (module level, functions, branches),
    resolved to the project modules it loads: `from P import x` names P.x when that is a module, else P."""
    tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    out = []

    def project(target: str) -> str | None:  # the longest known module that `target` starts with
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target or None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            resolved = project(target)
            if resolved is not None and resolved != name:
                out.append((resolved, node.lineno))
    return out


def graph() -> dict[str, dict[str, int]]:
    """module -> {module it imports: line of the first such statement}, over the whole of harness/ and methods/."""
    found = modules()
    edges = {}
    for name, file in found.items():
        edges[name] = {}
        for target, line in imports(name, file, set(found)):
            edges[name].setdefault(target, line)
    return edges


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """One loop [a, b, ..., a] through each strongly connected group of two or more modules (Tarjan)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    loops = []
    for group in groups:  # shortest way back to the group's first module, by breadth-first search inside it
        start = min(group)
        paths, frontier = {start: [start]}, [start]
        while frontier and start not in [w for v in frontier for w in edges[v]]:
            nxt = []
            for v in frontier:
                for w in sorted(edges[v]):
                    if w in group and w not in paths:
                        paths[w] = paths[v] + [w]
                        nxt.append(w)
            frontier = nxt
        last = next(v for v in frontier if start in edges[v])
        loops.append(paths[last] + [start])
    return loops


def runtime_graph() -> dict[str, dict[str, int]]:
    return {v: {w: line for w, line in ws.items() if not is_train(w)}
            for v, ws in graph().items() if not is_train(v)}


def test_importing_the_whole_runtime_loads_no_trainer():
    """Every runtime module imported in a fresh interpreter (the entry points first): no harness.train module
    comes with them."""
    script = textwrap.dedent(f"""
        import importlib, json, pkgutil, sys
        import harness.run, harness.report, harness.__main__, methods

        def walk(package):
            for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
                if info.name == {TRAIN!r} or info.name.startswith({TRAIN!r} + "."):
                    continue
                module = importlib.import_module(info.name)
                if info.ispkg:
                    walk(module)

        import harness
        walk(harness)
        walk(methods)
        print(json.dumps(sorted(sys.modules)))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    runtime = [m for m in modules() if not is_train(m)]
    assert set(runtime) <= set(loaded), sorted(set(runtime) - set(loaded))
    assert not [m for m in loaded if is_train(m)], [m for m in loaded if is_train(m)]


def test_no_runtime_module_names_a_trainer_in_any_import():
    """The static view of the same rule: imports inside functions (which the test above need not run) count too."""
    found = modules()
    bad = [f"{found[v].relative_to(ROOT)}:{line} imports {w}"
           for v, ws in graph().items() if not is_train(v) for w, line in ws.items() if is_train(w)]
    assert not bad, "\n".join(bad)


def test_the_runtime_has_no_import_cycle():
    """Over every import statement of harness/ and methods/ (outside harness/train), module level or not."""
    edges = runtime_graph()
    found = modules()
    loops = cycles(edges)
    report = ["  ->  ".join(f"{v} ({found[v].relative_to(ROOT)}:{edges[v][w]})" for v, w in zip(loop, loop[1:]))
              + f"  ->  {loop[-1]}" for loop in loops]
    assert not loops, "import cycles:\n" + "\n".join(report)


def test_the_cycle_finder_finds_cycles():
    """The checker can fail: a loop of three and a pair are found, a diamond is not a loop."""
    edges = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"e": 1, "f": 1}, "e": {"g": 1}, "f": {"g": 1},
             "g": {}, "x": {"y": 1}, "y": {"x": 1}}
    loops = sorted(cycles(edges))
    assert loops == [["a", "b", "c", "a"], ["x", "y", "x"]]


def test_imports_inside_functions_and_relative_ones_are_edges(tmp_path):
    file = tmp_path / "m.py"
    file.write_text("import os\nfrom harness import PROJECT_ROOT, scenes\n\ndef f():\n    from .zoo import smollm2\n"
                    "    import methods.core\n")
    known = {"harness", "harness.scenes", "harness.zoo", "harness.zoo.smollm2", "methods", "methods.core", "harness.m"}
    assert sorted(t for t, _ in imports("harness.m", file, known)) == [
        "harness", "harness.scenes", "harness.zoo.smollm2", "methods.core"]


# --- documentation: a README a newcomer reads in five minutes, the rest in docs/ -------------------------------------

README = ROOT / "README.md"
DOCS = ("methods", "metrics", "reproducing", "vllm", "records", "zoo")  # and extending.md, the plugin guide
DATED = re.compile(r"\b20\d\d-[01]\d-[0-3]\d\b")  # a day: dated measurements live in results/bench/latest.md


def prose(text: str) -> str:
    """Markdown without its fenced code blocks and inline code spans, where brackets are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def links(file: Path) -> list[str]:
    """The relative link targets of a markdown file (web addresses and in-page anchors left out)."""
    targets = re.findall(r"\]\(([^)\s]+)\)", prose(file.read_text(encoding="utf-8")))
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_readme_is_short_and_starts_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150, f"README.md has {len(text.splitlines())} lines; move detail to docs/"
    first_block = re.search(r"^```\w*\n(.*?)^```", text, flags=re.S | re.M).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.split("#")[0].strip()]
    assert commands == ["make run", "make test"], commands
    targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M)
    assert {"run", "test", "setup"} <= set(targets)


def test_every_doc_the_readme_maps_exists():
    missing = [f"docs/{name}.md" for name in DOCS if not (ROOT / "docs" / f"{name}.md").is_file()]
    assert not missing, missing


def test_every_relative_link_in_the_readme_and_docs_points_to_a_file():
    files = [README, *sorted((ROOT / "docs").glob("*.md"))]
    broken = [f"{file.relative_to(ROOT)} -> {target}" for file in files for target in links(file)
              if not (file.parent / target.split("#")[0]).exists()]
    assert not broken, "\n".join(broken)


def test_the_link_finder_finds_links(tmp_path):
    """The checker can fail: a link in prose counts, one in code does not, web addresses and anchors are skipped."""
    page = tmp_path / "page.md"
    page.write_text("See [a](a.md) and [b](sub/b.md#part), [web](https://x.org), [here](#top).\n"
                    "`[c](c.md)`\n```\n[d](d.md)\n```\n")
    assert links(page) == ["a.md", "sub/b.md#part"]


def test_readme_and_docs_quote_no_dated_measurement():
    """Days, machines and measured ratios belong to results/bench/latest.md, which says how to regenerate each."""
    dated = [f"{file.relative_to(ROOT)}:{n}: {line.strip()}" for file in [README, *sorted((ROOT / "docs").glob("*.md"))]
             for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1) if DATED.search(line)]
    assert not dated, "\n".join(dated)
