"""The project's own files agree with each other: the runtime dependencies, and no leftover config."""

from __future__ import annotations

import re
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
