"""Binder and a local install get the same packages; the README's commands are the real ones."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
START_COMMAND = "python3 course.py"
TEST_COMMAND = "python3 course.py test"


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def conda_and_pip(env: dict) -> tuple[list[str], list[str]]:
    conda, pip = [], []
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            pip.extend(entry["pip"])
        else:
            conda.append(str(entry))
    return conda, pip


def normalized(requirement: str) -> str:
    return re.sub(r"\s+", "", requirement).lower()


def test_python_is_3_11_or_newer_in_pyproject():
    assert pyproject()["project"]["requires-python"] == ">=3.11"


def test_environment_pins_python_3_11_exactly():
    # repo2docker ignores a minimum and defaults to 3.10, too old for nbgrader 0.9.6.
    conda, _ = conda_and_pip(environment())
    assert [dep for dep in conda if dep.startswith("python")] == ["python=3.11"]


def test_environment_lists_the_same_runtime_dependencies_as_pyproject():
    _, pip = conda_and_pip(environment())
    runtime = pyproject()["project"]["dependencies"]
    assert sorted(map(normalized, pip)) == sorted(map(normalized, runtime))
    assert len(set(map(normalized, runtime))) == len(runtime), "a dependency is listed twice"


def test_environment_does_not_install_the_package_itself():
    # repo2docker installs environment.yml before the repository is copied in (issue #1265).
    _, pip = conda_and_pip(environment())
    assert not [dep for dep in pip if dep.startswith(("-e", ".")) or "maillab" in dep]


def test_test_tools_stay_out_of_the_runtime_dependencies():
    project = pyproject()["project"]
    runtime = {re.split(r"[<>=!~\[; ]", dep)[0].lower() for dep in project["dependencies"]}
    assert "pytest" not in runtime
    assert any(dep.startswith("pytest") for dep in project["optional-dependencies"]["test"])


def test_postbuild_installs_the_package_and_locks_the_instructor_tools():
    postbuild = ROOT / "postBuild"
    assert os.access(postbuild, os.X_OK), "repo2docker runs postBuild only if it is executable"
    text = postbuild.read_text()
    assert text.startswith("#!")
    assert re.search(r"pip install\b[^\n]*\s(-e\s+)?\.\s*$", text, re.MULTILINE), \
        "postBuild must install the package itself (pip install --no-deps . or -e .)"
    assert "server extension disable --sys-prefix nbgrader.server_extensions.formgrader" in text
    for plugin in ("formgrader", "create-assignment", "course-list"):
        assert f"@jupyter/nbgrader:{plugin}" in text
    assert "labextension disable" in text and "labextension lock" in text


def test_license_has_mit_for_code_and_cc_by_4_for_text():
    text = (ROOT / "LICENSE").read_text()
    assert "MIT License" in text and "Permission is hereby granted, free of charge" in text
    assert "The maillab authors" in text
    assert "CC BY 4.0" in text and "https://creativecommons.org/licenses/by/4.0/" in text
    assert pyproject()["project"]["license"] == "MIT"


def test_readme_shows_the_two_commands_and_ci_runs_the_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = "\n".join(re.findall(r"```(?:bash|sh|console)?\n(.*?)```", readme, re.DOTALL))
    lines = [line.strip() for line in blocks.splitlines()]
    assert START_COMMAND in lines and TEST_COMMAND in lines
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert ci[-1] == TEST_COMMAND, "CI must run the README's test command, last"
    assert "set -euo pipefail" in ci


def test_binder_link_and_launcher_open_an_existing_notebook():
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"mybinder\.org/v2/gh/[^)\s]+urlpath=lab/tree/([^)\s&]+)", readme)
    assert targets, "README needs a Binder link"
    for target in targets:
        assert (ROOT / target).is_file(), target
    launcher = (ROOT / "course.py").read_text()
    welcome = re.search(r'WELCOME = "([^"]+)"', launcher).group(1)
    assert (ROOT / welcome).is_file()


def test_launcher_uses_only_the_standard_library():
    tree = ast.parse((ROOT / "course.py").read_text())
    modules = {alias.name.split(".")[0] for node in ast.walk(tree)
               if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module}
    assert modules <= sys.stdlib_module_names, modules - sys.stdlib_module_names


def test_launcher_prints_its_usage():
    result = subprocess.run([sys.executable, str(ROOT / "course.py"), "--help"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert START_COMMAND in result.stdout and TEST_COMMAND in result.stdout


def test_the_installed_package_is_this_checkout():
    import maillab

    assert Path(maillab.__file__).resolve().is_relative_to(ROOT / "src")
    assert maillab.__version__


def test_a_missing_tool_skips_on_a_dev_machine_and_fails_under_ci(monkeypatch):
    assert require_tool("sh")
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="no-such-tool is not installed"):
        require_tool("no-such-tool")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-such-tool is not installed"):
        require_tool("no-such-tool")


def test_a_plain_install_carries_templates_and_the_greek_catalog(tmp_path):
    """Binder's postBuild runs `pip install .`: the built wheel must hold every non-Python file
    the package reads at run time (webmail templates and styles, compiled Greek catalog)."""
    import zipfile

    import shutil

    source = tmp_path / "source"  # a copy, so the build leaves nothing behind in the checkout
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path), str(source)], check=True, cwd=tmp_path)
    wheel = next(tmp_path.glob("maillab-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "maillab/locale/el/LC_MESSAGES/maillab.mo" in names
    assert "maillab/webmail/templates/base.html" in names
    assert "maillab/webmail/static/style.css" in names
