"""The conda environments of the rules (envs/*.yaml): parseable, pinned, and in agreement with pyproject.toml and
constraints.txt (conda itself is not available here, so the envs are checked, not created)."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
ENVS = sorted((REPO / "envs").glob("*.yaml"))
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def constraint_pins() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(requirement.name)] = Version(spec.version)
    return pins


def project_ranges() -> dict[str, SpecifierSet]:
    ranges = {}
    project = PYPROJECT["project"]
    for line in project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]:
        requirement = Requirement(line)
        ranges[canonicalize_name(requirement.name)] = requirement.specifier
    return ranges


def pip_section(env: dict) -> list[str]:
    (pip,) = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    return pip


def test_every_rule_uses_an_env_that_exists():
    used = set()
    for smk in (REPO / "workflow/rules").glob("*.smk"):
        used |= set(re.findall(r'conda:\n\s+"([^"]+)"', smk.read_text()))
    assert used, "no conda: directives found"
    for path in used:
        assert (REPO / "workflow/rules" / path).resolve().is_file(), path
    assert {(REPO / "workflow/rules" / p).resolve() for p in used} == {e.resolve() for e in ENVS}


@pytest.mark.parametrize("env_file", ENVS, ids=lambda p: p.name)
def test_env_pins_agree_with_pyproject_and_constraints(env_file):
    env = yaml.safe_load(env_file.read_text())
    assert env["channels"][0] == "conda-forge"
    python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python=")]
    assert python and Version(python[0].split("=", 1)[1]) in SpecifierSet(PYPROJECT["project"]["requires-python"])
    pins, ranges = constraint_pins(), project_ranges()
    pip = pip_section(env)
    assert "-e .." in pip  # the package itself, from the repository
    constraints = [line.split()[1] for line in pip if line.startswith("-c ")]
    assert constraints and all((env_file.parent / c).resolve() == REPO / "constraints.txt" for c in constraints)
    for line in pip:
        if line.startswith("-"):
            continue
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{env_file.name}: {line} is not pinned"
        assert Version(spec.version) == pins[name], f"{env_file.name}: {line} but constraints.txt has {pins[name]}"
        if name in ranges:
            assert Version(spec.version) in ranges[name], f"{env_file.name}: {line} outside pyproject's {ranges[name]}"


def test_constraints_satisfy_pyproject():
    pins = constraint_pins()
    for name, specifier in project_ranges().items():
        if name in pins:
            assert pins[name] in specifier, f"constraints.txt {name}=={pins[name]} outside pyproject's {specifier}"
