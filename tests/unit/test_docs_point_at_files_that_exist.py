"""Docs point at what is in the repository (issue 11.9): no reference to a DESIGN.md
(the design page is docs/design.md), and every Markdown link of the README and docs/
to another file of the repository resolves."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEXTS = [ROOT / "README.md", ROOT / "pyproject.toml", *sorted((ROOT / "docs").glob("*.md")),
         *sorted((ROOT / "manifests").rglob("*.yaml")),
         *(p for d in ("ipam", "plumbing", "scheduler", "webhooks", "datapath", "stickyip",
                       "netbed", "demo", "bench", "kubestandin")
           for p in sorted((ROOT / d).rglob("*.py")))]


def test_no_reference_to_a_design_md_that_is_not_there() -> None:
    assert (ROOT / "docs" / "design.md").is_file()
    found = [f"{p.relative_to(ROOT)}:{n}" for p in TEXTS
             for n, line in enumerate(p.read_text().splitlines(), 1) if "DESIGN.md" in line]
    assert found == [], "cite docs/design.md instead"


def test_markdown_links_to_repository_files_resolve() -> None:
    broken = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert broken == []
