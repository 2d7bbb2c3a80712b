"""conftest.require, the one way a test asks for a tool outside Python (podman, kubectl, chromium):
skipped on a user's machine without it, failed where the run requires it (CI=true, or SER_REQUIRE
names it), so that a CI run cannot lose the container, deploy and browser tests to a missing tool
unseen. Each case is a real pytest run (pytester) of a test that requires podman, with the
project's conftest as its plugin, on a PATH where podman is missing, or a stand-in answers."""

import pytest

from tests.conftest import REPO_ROOT, TOOLS

NEEDS_PODMAN = """
from tests.conftest import require


def test_needs_podman():
    assert require("podman")
"""

PODMAN_STAND_IN = """#!/bin/sh
# answers `podman info` and `podman image exists` as a podman that can run containers
[ "$1" = info ] && echo '{}'
exit 0
"""


@pytest.fixture
def session(pytester, tmp_path, monkeypatch):
    """run(**environment): a pytest run of NEEDS_PODMAN with these variables; `.bin`: its whole PATH."""
    pytester.makepyfile(test_needs_podman=NEEDS_PODMAN)
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    for variable in ("CI", "SER_REQUIRE"):
        monkeypatch.delenv(variable, raising=False)

    def run(**environment):
        for variable, value in environment.items():
            monkeypatch.setenv(variable, value)
        return pytester.runpytest_subprocess("-p", "tests.conftest", "-p", "no:cacheprovider", "-rsf")

    run.bin = folder
    return run


def test_the_mechanism_knows_every_tool_a_test_needs():
    assert set(TOOLS) == {"podman", "kubectl", "chromium"}


def test_a_missing_tool_skips_its_tests_with_how_to_get_it_on_a_users_machine(session):
    result = session()
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*podman is not installed: `make setup` as root installs it*"])


@pytest.mark.parametrize("environment, why", [({"CI": "true"}, "CI=true requires every tool"),
                                              ({"SER_REQUIRE": "kubectl,podman"}, "SER_REQUIRE names it")])
def test_where_the_run_requires_the_tool_its_absence_fails_the_run(session, environment, why):
    result = session(**environment)
    result.assert_outcomes(failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([f"*podman is missing and this run requires it ({why}): podman is not installed: "
                                 "`make setup` as root installs it*"])


def test_a_run_that_requires_other_tools_still_skips_this_one(session):
    session(SER_REQUIRE="kubectl").assert_outcomes(skipped=1)


def test_with_the_tool_there_a_run_that_requires_it_passes(session):
    """The positive control: under CI=true the same test passes where podman answers."""
    podman = session.bin / "podman"
    podman.write_text(PODMAN_STAND_IN)
    podman.chmod(0o755)
    session(CI="true").assert_outcomes(passed=1)


def test_a_misspelt_tool_stops_the_run_before_any_test(session):
    result = session(SER_REQUIRE="podmn")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*SER_REQUIRE=podmn names podmn, which no test requires: the tools are "
                                 "podman, kubectl, chromium*"])
