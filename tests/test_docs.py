"""The docs build strictly, their runnable examples run, and their references match the code."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flask_engage.config import DEFAULTS as DEFAULT_CONFIG
from flask_engage.segments.schema import OPERATORS, WINDOW_KINDS, validate_filter

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RUNNABLE = re.compile(r"<!-- runnable -->\n```python\n(.*?)```", re.S)


def runnable_pages() -> list[Path]:
    return sorted(p for p in DOCS.glob("*.md") if RUNNABLE.search(p.read_text(encoding="utf-8")))


def test_docs_build_strictly(tmp_path):
    pytest.importorskip("mkdocs")
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    # The API page is regenerated from the current docstrings before building.
    subprocess.run([sys.executable, str(DOCS / "gen_api.py"), str(tmp_path / "docs" / "api.md")],
                   check=True, cwd=ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "filters" / "index.html").exists()
    assert "track_model" in (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("page", runnable_pages(), ids=lambda p: p.name)
def test_runnable_examples_run(page, tmp_path):
    """Each page's runnable blocks, in order, as one script in an empty directory."""
    script = "\n".join(RUNNABLE.findall(page.read_text(encoding="utf-8")))
    (tmp_path / "example.py").write_text(script, encoding="utf-8")
    result = subprocess.run([sys.executable, "-W", "error", "example.py"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "failed" not in result.stderr, result.stderr


def test_quickstart_has_runnable_examples():
    assert DOCS / "index.md" in runnable_pages()


def test_filter_examples_are_valid_and_cover_every_operator_and_window():
    text = (DOCS / "filters.md").read_text(encoding="utf-8")
    examples = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)]
    inline = re.findall(r'`(\{"(?:attribute|event)".*?\})`', text)
    examples += [json.loads(span) for span in inline]
    assert len(examples) > 30
    for example in examples:
        validate_filter(example)
    used = json.dumps(examples)
    for op in OPERATORS:
        assert f'"op": "{op}"' in used, op
    for window in WINDOW_KINDS:
        assert f'"window": {{"{window}"' in used, window


def test_configuration_page_lists_every_key():
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    missing = [key for key in DEFAULT_CONFIG if f"| `{key}` |" not in text]
    assert missing == []
