"""environment.yml lists what pyproject.toml lists, so conda users get the same environment."""
import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def _names(reqs):
    return {re.split(r"[<>=!~ \[]", r, maxsplit=1)[0].lower() for r in reqs}


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = _names(project["dependencies"]) | _names(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = _names(r for r in pip if not r.startswith("-"))
    assert wanted == listed, f"only in pyproject: {sorted(wanted - listed)}; only in environment.yml: {sorted(listed - wanted)}"


def test_readme_shows_the_two_commands_and_ci_calls_make_test():
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme and "make pipeline" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text()
