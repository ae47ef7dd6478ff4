"""The project's own files agree with each other: the runtime dependencies, and no leftover config."""

from __future__ import annotations

import re
import subprocess
import tomllib

from tests.unit.conftest import ROOT


def pins(lines: list[str]) -> dict[str, str]:
    """{package: version} of `name==version` requirement lines, comments and blanks skipped."""
    found = {}
    for line in lines:
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([A-Za-z0-9_.+-]+)", requirement)
            assert match, f"not pinned with ==: {line!r}"
            name, version = match.groups()
            found[name.lower()] = version
    return found


def test_pyproject_dependencies_are_exactly_requirements_txt():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    from_requirements = pins((ROOT / "requirements.txt").read_text().splitlines())
    assert pins(project["dependencies"]) == from_requirements
    assert {"google-cloud-pubsub", "cassandra-driver", "faker"} <= set(from_requirements)  # the design's three


def test_tool_settings_live_in_pyproject_alone():
    assert not (ROOT / "pytest.ini").exists()
    assert not (ROOT / "setup.cfg").exists()
    tools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]
    assert {"pytest", "ruff", "mypy"} <= set(tools)


PEM_KEY = b"PRIVATE" + b" KEY-----"  # split, so that this file does not match itself


def test_no_private_key_or_keystore_is_tracked_by_git():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert tracked, "not a git checkout?"
    stores = [name for name in tracked if name.endswith((".p12", ".pfx", ".jks", ".keystore", ".key", ".csr"))]
    assert stores == []
    with_keys = [name for name in tracked if (ROOT / name).is_file() and PEM_KEY in (ROOT / name).read_bytes()]
    assert with_keys == []
    assert ".stack/" in (ROOT / ".gitignore").read_text().split()  # where the secured stack keeps its keys
