"""The shape of the code: no import cycles inside jnst/, thin scripts."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def modules() -> dict[str, Path]:
  out = {}
  for p in (ROOT / "jnst").rglob("*.py"):
    name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
    out[name.removesuffix(".__init__")] = p
  return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
  """Modules of ``known`` that ``name`` imports by name (``from pkg import x`` names ``pkg``
  and, where x is a module, ``pkg.x``; relative imports resolved)."""
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
      out |= {base} | {f"{base}.{a.name}" for a in node.names}
    elif isinstance(node, ast.Import):
      out |= {a.name for a in node.names}
  return {m for m in out if m in known and m != name}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
  state: dict[str, int] = {}

  def visit(u, stack):
    state[u] = 1
    stack.append(u)
    for v in sorted(edges[u]):
      if state.get(v) == 1:
        return stack[stack.index(v):] + [v]
      if not state.get(v):
        found = visit(v, stack)
        if found:
          return found
    stack.pop()
    state[u] = 2
    return None

  for m in sorted(edges):
    if not state.get(m):
      found = visit(m, [])
      if found:
        return found
  return None


def test_no_import_cycles_in_jnst():
  mods = modules()
  edges = {m: imports(m, p, set(mods)) for m, p in mods.items()}
  assert "jnst.objective" in edges["jnst.experiments"]  # The reader sees real imports.
  assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


def test_cycle_finder_finds_a_cycle():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "scripts").glob("*.py")))
def test_scripts_are_thin(script):
  lines = (ROOT / "scripts" / script).read_text().splitlines()
  assert len(lines) <= 100, f"scripts/{script} has {len(lines)} lines: move logic into jnst/"


def test_every_package_is_installed():
  import tomllib
  listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
  packages = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "jnst").rglob("__init__.py")}
  assert packages <= listed, f"add {sorted(packages - listed)} to pyproject's packages"
