"""The README and docs/ stand alone: every relative link and every file path they name exists in the repository,
and every demo option the README documents is one scripts/run_demo.py accepts."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
USER_DOCS = [REPO / "README.md", REPO / "docs" / "label-studio.md"]  # ALGORITHM.md also cites the reference repo's files


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
    section = readme[readme.index("## The demo"):readme.index("## Installing")]
    documented = set(re.findall(r"`(--[a-z-]+)", section))
    accepted = {option for action in _load_run_demo().build_parser()._actions for option in action.option_strings}
    assert documented, "the README's demo section documents no option"
    assert documented <= accepted, f"README documents options run_demo.py lacks: {sorted(documented - accepted)}"
