"""scripts/check_links.py, the link check of `make lint`: run as make runs it, on a made-up tree
with links that resolve and links that do not, and on the repository itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.unit.conftest import ROOT

SCRIPT = ROOT / "scripts" / "check_links.py"


def check_links(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root)], capture_output=True, text=True, timeout=60, check=False
    )


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_a_broken_relative_link_fails_with_its_file_line_and_target(tmp_path):
    write(tmp_path / "docs" / "guide.md", "# Guide\n\nBack to the [README](../README.md#top).\n")
    write(
        tmp_path / "README.md",
        "# Project\n\nSee [the guide](docs/guide.md).\nSee [the missing page](docs/missing.md#section).\n",
    )

    result = check_links(tmp_path)

    assert result.returncode == 1
    assert result.stdout.splitlines() == ["README.md:4: docs/missing.md#section"]


def test_links_that_resolve_or_are_not_relative_pass(tmp_path):
    write(tmp_path / "bench" / "chart.png", "")
    write(
        tmp_path / "docs" / "bench.md",
        "![chart](../bench/chart.png)\n[web](https://example.com/x) [mail](mailto:a@example.com) [up](#bench)\n",
    )
    write(tmp_path / "CONTRIBUTING.md", "[bench](docs/bench.md) [folder](docs/)\n")

    result = check_links(tmp_path)

    assert result.returncode == 0, result.stdout


def test_an_image_path_is_resolved_from_the_file_it_is_in(tmp_path):
    """The same target that resolves from the root is broken one folder down."""
    write(tmp_path / "monitoring" / "graph.png", "")
    write(tmp_path / "README.md", "![graph](monitoring/graph.png)\n")
    write(tmp_path / "docs" / "monitoring.md", "# Monitoring\n\n![graph](monitoring/graph.png)\n")

    result = check_links(tmp_path)

    assert result.returncode == 1
    assert result.stdout.splitlines() == ["docs/monitoring.md:3: monitoring/graph.png"]


def test_every_kind_of_link_is_checked_and_code_is_not(tmp_path):
    root = tmp_path / "repo"
    write(
        root / "README.md",
        "```\n[in a fence](fence.md)\n```\n"  # lines 1-3: code, not a link
        "`[in a span](span.md)`\n"  # line 4: code
        "[a link whose text\nruns on](wrapped.md)\n"  # lines 5-6: the target is on line 6
        "[ref]: reference.md\n"  # line 7: a reference definition
        "[outside](../outside.md)\n",  # line 8: leaves the root
    )
    write(tmp_path / "outside.md", "")  # it exists, but outside the root

    result = check_links(root)

    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "README.md:6: wrapped.md",
        "README.md:7: reference.md",
        "README.md:8: ../outside.md",
    ]


def test_every_relative_link_in_the_repository_resolves():
    result = check_links(ROOT)
    assert result.returncode == 0, result.stdout
