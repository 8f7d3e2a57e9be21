"""The README works from a checkout or an unpacked sdist: its links stay inside the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_links_point_inside_the_repository():
    targets = re.findall(r"\]\(([^)]+)\)", README)
    assert targets, "the README links to its documentation"
    for target in targets:
        assert not target.startswith(("http:", "https:", "/", "../")), target
        assert (ROOT / target.split("#")[0]).exists(), target
    assert "../" not in README
