"""The README and docs/ stand alone: every relative link and every file path they name exists in the repository,
every demo option the README documents is one scripts/run_demo.py accepts, the README stays short, and every
environment variable the code reads is in docs/configuration.md (and every one listed there is read)."""
from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# ALGORITHM.md also cites the reference implementation's files
USER_DOCS = [REPO / "README.md", *sorted(p for p in (REPO / "docs").glob("*.md") if p.name != "ALGORITHM.md")]


def _load_run_demo():
    spec = importlib.util.spec_from_file_location("run_demo", REPO / "scripts" / "run_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path):
    text = doc.read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if not re.match(r"[a-z]+:", t)]
    missing = [t for t in local if not (doc.parent / t).exists()]
    assert not missing, f"{doc.name} links to files that are not in the repository: {missing}"


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: p.name)
def test_named_repository_files_exist(doc: Path):
    text = doc.read_text()
    assert "../shared" not in text and "shared notes" not in text, f"{doc.name} points outside the repository"
    named = set(re.findall(r"`((?:scripts|docs|benchmarks|tests|ntt_engine|labelstudio_backend|ntt_cli)/[\w./-]+)`",
                           text))
    named |= set(re.findall(r"\b((?:scripts|docs)/[\w-]+\.(?:sh|py|md))\b", text))
    missing = sorted(n for n in named if not (REPO / n.rstrip("/")).exists())
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"


def test_readme_demo_options_exist():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## The demo"):readme.index("## Connecting your own Label Studio")]
    documented = set(re.findall(r"`(--[a-z-]+)", section))
    accepted = {option for action in _load_run_demo().build_parser()._actions for option in action.option_strings}
    assert documented, "the README's demo section documents no option"
    assert documented <= accepted, f"README documents options run_demo.py lacks: {sorted(documented - accepted)}"


def test_readme_is_read_in_five_minutes():
    lines = (REPO / "README.md").read_text().count("\n")
    assert lines <= 200, f"README.md has {lines} lines; move details to a page of docs/"


# ------------------------------------------------------------------------------------------------ environment variables
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]{2,}$")
CODE_PACKAGES = ("labelstudio_backend", "ntt_engine", "ntt_cli")
CONFIGURATION = REPO / "docs" / "configuration.md"


def _string(node: ast.AST, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def _env_reads(source: str) -> set[str]:
    """Names read from the environment: os.environ.get/[]/pop, os.getenv, env.get(...) on the mapping Settings
    reads, and settings.py's _int/_float/_bool/_first(env, NAME...) helpers. Module constants are followed."""
    tree = ast.parse(source)
    constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                 for t in n.targets if isinstance(t, ast.Name)
                 and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)}
    names: set[str] = set()
    for node in ast.walk(tree):
        candidates: list[ast.AST] = []
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in ("_int", "_float", "_bool", "_first"):
                candidates = node.args[1:]
            elif isinstance(func, ast.Attribute) and func.attr == "getenv":
                candidates = node.args[:1]
            elif isinstance(func, ast.Attribute) and func.attr in ("get", "pop") and (
                    (isinstance(func.value, ast.Attribute) and func.value.attr == "environ")
                    or (isinstance(func.value, ast.Name) and func.value.id == "env")):
                candidates = node.args[:1]
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "environ":
            candidates = [node.slice]
        names |= {s for s in (_string(c, constants) for c in candidates) if s and ENV_NAME.match(s)}
    return names


def env_read_by_code() -> set[str]:
    return {name for package in CODE_PACKAGES for path in (REPO / package).rglob("*.py")
            for name in _env_reads(path.read_text())}


def env_documented(text: str) -> set[str]:
    """The variables in the first column of configuration.md's tables."""
    names = set()
    for line in text.splitlines():
        if line.startswith("| `"):
            names |= {n for n in re.findall(r"`([A-Z][A-Z0-9_]{2,})`", line.split("|")[1]) if ENV_NAME.match(n)}
    return names


def test_every_environment_variable_is_documented_and_every_documented_one_is_read():
    read, documented = env_read_by_code(), env_documented(CONFIGURATION.read_text())
    assert len(read) > 30, f"the scan found too few variables to be working: {sorted(read)}"
    assert not read - documented, f"read by the code but not in docs/configuration.md: {sorted(read - documented)}"
    assert not documented - read, f"in docs/configuration.md but read by no code: {sorted(documented - read)}"


def test_the_variable_check_catches_a_new_variable_and_a_stale_row():
    source = 'import os\nLIMIT_ENV = "NTT_SOMETHING_NEW"\nx = os.environ.get(LIMIT_ENV)\ny = _int(env, "NTT_OTHER", 1)\n'
    assert _env_reads(source) == {"NTT_SOMETHING_NEW", "NTT_OTHER"}
    table = "| variable | default |\n|---|---|\n| `NTT_GONE` (or `NTT_GONE_TOO`) | 1 |\nprose `NTT_NOT_A_ROW`\n"
    assert env_documented(table) == {"NTT_GONE", "NTT_GONE_TOO"}
