"""The Dockerfile and .dockerignore, held to the code they package (no Docker engine needed).

hadolint (`make lint`) checks the Dockerfile's practice; these tests check its facts: a pinned
slim Python that the code can run on, a numeric non-root user, the runtime requirements and
nothing else, and every file the scripts need copied where the code looks for it.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import json
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ecom_pipeline import admin
from tests.unit.conftest import ROOT
from tests.unit.deploy_facts import PACKAGE_SOURCES, SCRIPTS, parse_command

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
BASE_IMAGE = re.compile(r"python:(\d+)\.(\d+)\.(\d+)-slim-bookworm")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    text: str


def instructions() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        joined.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends with a continuation line"
    return [Instruction(keyword.upper(), rest.strip()) for keyword, _, rest in (j.partition(" ") for j in joined)]


def stages() -> list[list[Instruction]]:
    """The instructions of each build stage, in order (each list starts with its FROM)."""
    result: list[list[Instruction]] = []
    for instruction in instructions():
        if instruction.keyword == "FROM":
            result.append([])
        assert result, "an instruction before the first FROM"
        result[-1].append(instruction)
    return result


def final_stage() -> list[Instruction]:
    return stages()[-1]


def only(stage: list[Instruction], keyword: str) -> list[str]:
    return [i.text for i in stage if i.keyword == keyword]


def environment(stage: list[Instruction]) -> dict[str, str]:
    values: dict[str, str] = {}
    for text in only(stage, "ENV"):
        for item in shlex.split(text):
            name, _, value = item.partition("=")
            values[name] = value
    return values


def copies(stage: list[Instruction]) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context (not `--from=`)."""
    found = []
    for text in only(stage, "COPY"):
        words = shlex.split(text)
        if any(word.startswith("--from") for word in words):
            continue
        paths = [word for word in words if not word.startswith("--")]
        found.append((paths[:-1], paths[-1]))
    return found


def image_files() -> dict[str, str]:
    """{path in the image: path in the checkout} of every file the final stage copies from the
    build context, as Docker places them (a directory's contents go under the destination)."""
    stage = final_stage()
    workdir = PurePosixPath("/")
    placed: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == "WORKDIR":
            workdir = workdir / instruction.text
        if instruction.keyword != "COPY" or "--from" in instruction.text:
            continue
        ((sources, destination),) = copies([instruction])
        target = workdir / destination
        for source in sources:
            path = ROOT / source
            if path.is_dir():
                for file in path.rglob("*"):
                    if file.is_file() and "__pycache__" not in file.parts:
                        placed[str(target / file.relative_to(path))] = str(file.relative_to(ROOT))
            else:
                assert destination.endswith("/") or len(sources) == 1, f"COPY of several files to {destination}"
                name = path.name if destination.endswith("/") else ""
                placed[str(target / name) if name else str(target)] = source
    return placed


def workdir() -> PurePosixPath:
    (directory,) = only(final_stage(), "WORKDIR")
    return PurePosixPath(directory)


def module_file(name: str) -> Path | None:
    """The checkout's file of a dotted module name: a module, or a package's __init__.py."""
    base = ROOT / name.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def local_imports(path: Path) -> set[str]:
    """The project's modules a file imports, relative imports resolved from its own package,
    with every package they are in (importing `a.b.c` runs `a` and `a.b` first)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - (node.level - 1)] + ([node.module] if node.module else [])
                module = ".".join(base)
            elif node.module:
                module = node.module
            else:
                continue
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    with_parents = {".".join(m.split(".")[: i + 1]) for m in found for i in range(m.count(".") + 1)}
    return {m for m in with_parents if m.split(".")[0] == "ecom_pipeline" and module_file(m) is not None}


def third_party_imports(path) -> set[str]:
    """Top-level names of what a file imports from outside the project and the standard library."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name != "ecom_pipeline"}


def what_the_scripts_run() -> set[str]:
    """Every file of the checkout a script, or `python -m ecom_pipeline.admin` (the set-up Job),
    can import, through the package, transitively."""
    pending = [ROOT / name for name in SCRIPTS] + [ROOT / "ecom_pipeline" / "admin" / "__main__.py"]
    seen: set[str] = set()
    while pending:
        path = pending.pop()
        relative = str(path.relative_to(ROOT))
        if relative in seen:
            continue
        seen.add(relative)
        pending.extend(file for file in map(module_file, local_imports(path)) if file is not None)
    return seen


# --- the base image ---------------------------------------------------------------------------------


def test_every_stage_starts_from_the_same_slim_python_pinned_to_a_full_version():
    bases = [text.split()[0] for text in (stage[0].text for stage in stages())]
    assert len(bases) >= 2, "one stage builds, another runs"
    assert len(set(bases)) == 1, bases
    assert BASE_IMAGE.fullmatch(bases[0]), f"{bases[0]}: python:X.Y.Z-slim-bookworm"


def test_the_base_python_is_one_the_project_supports():
    match = BASE_IMAGE.fullmatch(stages()[0][0].text.split()[0])
    assert match is not None
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = re.fullmatch(r">=(\d+)\.(\d+)", requires)
    assert minimum is not None, requires
    assert (int(match.group(1)), int(match.group(2))) >= (int(minimum.group(1)), int(minimum.group(2)))


# --- the user and the file system -------------------------------------------------------------------


def test_the_image_runs_as_a_numeric_user_that_is_not_root():
    users = only(final_stage(), "USER")
    assert users, "no USER: the image would run as root"
    user = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1])
    assert user is not None, f"USER {users[-1]}: numeric, so Kubernetes' runAsNonRoot can check it"
    assert int(user.group(1)) != 0
    assert user.group(2) is None or int(user.group(2)) != 0


def test_nothing_is_copied_or_run_as_the_user_after_it_is_set():
    """The code stays root's and read-only to the user that runs it."""
    keywords = [i.keyword for i in final_stage()]
    after_user = keywords[keywords.index("USER") + 1 :]
    assert not {"COPY", "ADD", "RUN"} & set(after_user), after_user


def test_python_writes_no_byte_code_at_run_time():
    assert environment(final_stage()).get("PYTHONDONTWRITEBYTECODE") == "1"


def test_nothing_at_run_time_is_meant_to_be_written_outside_tmp():
    """HOME is where libraries put caches and configuration; with a read-only root file system
    only /tmp (an emptyDir or tmpfs) is writable."""
    home = environment(final_stage()).get("HOME", "")
    assert home == "/tmp" or home.startswith("/tmp/")


# --- what is installed ------------------------------------------------------------------------------


def pip_installs() -> list[list[str]]:
    """The arguments after `pip install` in every RUN of every stage."""
    found = []
    for stage in stages():
        for text in only(stage, "RUN"):
            for command in re.split(r"&&|;", text):
                words = shlex.split(command)
                names = [PurePosixPath(w).name for w in words]
                if "install" in words and any(n in ("pip", "pip3") for n in names):
                    found.append(words[words.index("install") + 1 :])
    return found


def test_only_requirements_txt_is_installed():
    installs = pip_installs()
    assert installs, "no pip install"
    for arguments in installs:
        requirement_files = [arguments[i + 1] for i, word in enumerate(arguments) if word in ("-r", "--requirement")]
        others = [
            word
            for i, word in enumerate(arguments)
            if not word.startswith("-") and (i == 0 or arguments[i - 1] not in ("-r", "--requirement"))
        ]
        assert others == [], f"packages named outside requirements.txt: {others}"
        assert [PurePosixPath(f).name for f in requirement_files] == ["requirements.txt"]
    copied = [sources for stage in stages() for sources, _ in copies(stage)]
    assert ["requirements.txt"] in copied
    assert "requirements-dev" not in " ".join(i.text for i in instructions())


def requirement_closure() -> set[str]:
    """The distributions requirements.txt installs: its pins and, from this environment's
    metadata, everything they require in turn."""
    names = []
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            names.append(Requirement(requirement).name)
    closure: set[str] = set()
    while names:
        name = canonicalize_name(names.pop())
        if name in closure:
            continue
        closure.add(name)
        for text in importlib.metadata.requires(name) or []:
            needed = Requirement(text)
            if needed.marker is None or needed.marker.evaluate({"extra": ""}):
                names.append(needed.name)
    return closure


def test_everything_the_scripts_import_comes_with_requirements_txt():
    providers = importlib.metadata.packages_distributions()
    closure = requirement_closure()
    missing = {}
    for relative in what_the_scripts_run():
        for name in third_party_imports(ROOT / relative):
            distributions = {canonicalize_name(d) for d in providers.get(name, [])}
            if not distributions & closure:
                missing[name] = relative
    assert missing == {}


# --- what is copied ---------------------------------------------------------------------------------


def test_the_scripts_and_every_module_they_import_are_copied_into_the_working_directory():
    placed = image_files()
    needed = what_the_scripts_run()
    assert set(SCRIPTS) <= needed and "ecom_pipeline/cli/__init__.py" in needed  # the scan found something
    assert "ecom_pipeline/consumer/__init__.py" in needed  # and follows sub-packages
    missing = sorted(n for n in needed if str(workdir() / n) not in placed)
    assert missing == []


def test_admin_setup_finds_schema_cql_where_it_looks_for_it():
    """admin.SCHEMA is found beside the package; in the image the package is under WORKDIR."""
    relative = admin.SCHEMA.relative_to(ROOT)
    assert image_files().get(str(workdir() / relative)) == str(relative)


def test_the_whole_package_is_copied_so_that_python_m_finds_every_module():
    placed = set(image_files())
    for module in PACKAGE_SOURCES:
        assert str(workdir() / module.relative_to(ROOT)) in placed


def test_no_test_stack_or_bench_file_is_copied():
    copied = set(image_files().values())
    assert not {c for c in copied if c.split("/")[0] in ("tests", "stack", "bench", ".stack", ".venv", "monitoring")}


# --- how it runs ------------------------------------------------------------------------------------


def test_the_entrypoint_is_python_in_exec_form():
    (entrypoint,) = only(final_stage(), "ENTRYPOINT")
    assert json.loads(entrypoint) == ["python"]  # exec form: Python is PID 1 and gets SIGTERM


def test_the_default_command_is_a_script_its_parser_accepts():
    (command,) = only(final_stage(), "CMD")
    argv = json.loads(command)
    assert parse_command(argv).target in SCRIPTS


@pytest.mark.parametrize(
    "argv",
    [
        ["order_data_consumer.py", "--log-format", "json"],
        ["ingest_in_fact_table.py"],
        ["replay_dlq_payments.py"],
        ["-m", "ecom_pipeline.admin", "setup"],
    ],
)
def test_the_commands_the_dockerfile_documents_are_accepted(argv):
    documented = DOCKERFILE.read_text()
    assert f"docker run IMAGE {' '.join(argv)}" in documented
    parse_command(argv)


# --- .dockerignore ----------------------------------------------------------------------------------


def ignored(path: str) -> bool:
    """Docker's rule, for the patterns used here: the last pattern matching the path, or one of
    its parent directories, decides; `!` lets it back in."""
    decision = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for line in DOCKERIGNORE.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        candidates = [pattern, pattern.removeprefix("**/")] if pattern.startswith("**/") else [pattern]
        for prefix in prefixes:
            pieces = prefix.split("/")
            tails = ["/".join(pieces[i:]) for i in range(len(pieces))] if pattern.startswith("**/") else [prefix]
            if any(fnmatch.fnmatchcase(tail, c) for tail in tails for c in candidates):
                decision = not negated
                break
    return decision


def test_the_build_context_lets_in_every_file_the_image_copies():
    needed = set(image_files().values()) | {"requirements.txt"}
    assert sorted(n for n in needed if ignored(n)) == []


def test_the_build_context_keeps_out_the_local_stack_the_venv_git_and_the_tests():
    for path in (
        ".stack/secure/admin-password",
        ".stack/cassandra/lib/x.jar",
        ".venv/bin/python",
        ".git/config",
        "tests/unit/conftest.py",
        "bench/run.py",
        "ecom_pipeline/__pycache__/cli.cpython-311.pyc",
    ):
        assert ignored(path), path
