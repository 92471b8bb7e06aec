"""What may skip, and what a test must be marked with: the one place where the test suite decides.

Two kinds of missing setup stop a test before it runs:

- setup the repository installs itself (.ci/setup_slurm.sh, .ci/setup_browser.sh, .ci/setup_java.sh, the dev
  extra): SLURM and munge, `ip` and `nsenter`, chromium and chromedriver, selenium, java. `require_installed` skips such a test on a
  developer's machine, saying what is missing and what installs it; in CI (`CI=true`, as GitHub Actions and
  most CI systems set it, and as .ci/run sets it) it fails the test with the same words, so that CI cannot
  pass with a tier silently skipped because an install went wrong.
- privileges the machine may not grant (network namespaces, tmpfs mounts). `skip_privileged` skips even in
  CI, with a reason tagged by its tier, and `privileged_summary` turns a run's skip reports into one line
  that lists each such tier with its reason, printed at the end of the run.

`unmarked_fixture_uses` is the collection-time rule that a test using an expensive fixture (one that
trains, builds the training tier's assets or starts a cluster) carries the marks that keep it out of
`make test-fast`: conftest.py lists the fixtures, `fail_collection_on_unmarked` fails the module.
`Checks` is the plugin conftest.py registers to apply both (tests/test_tiers.py runs it for real).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import NoReturn

import pytest

# The tiers that need what the machine may refuse, not what CI installs: the only skips CI accepts.
PRIVILEGED_TIERS = ("network namespaces", "tmpfs mounts")
# A privileged skip's reason starts with its tier, so that the summary can find it again in the skip
# reports: under pytest-xdist those are all the controller gets back from its workers (no exception type,
# no item), and the reason text is what they carry.
_PRIVILEGED = re.compile(r"^privileged tier \[(?P<tier>[^\]]+)\]: (?P<reason>.*)$", re.DOTALL)


def in_ci() -> bool:
    """Whether this run is CI's: `CI` set to `true` (GitHub Actions, GitLab, most others) or `1`."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def require_installed(what: str, installer: str, reason: str) -> NoReturn:
    """Stops a test whose setup, which `installer` installs, is missing or unusable: a skip on a
    developer's machine, a failure in CI. `what` names the missing piece ("SLURM and munge"), `installer`
    what puts it there (".ci/setup_slurm.sh"), `reason` what was found ("sbatch, slurmd not found")."""
    message = f"{what} (installed by {installer}): {reason}"
    if in_ci():
        pytest.fail(
            f"missing in CI: {message}\n(CI=true: what the repository installs itself must be there in CI, "
            "so this test fails instead of skipping)",
            pytrace=False,
        )
    pytest.skip(message)


def skip_privileged(tier: str, reason: str) -> NoReturn:
    """Skips a test of a privileged tier, in CI too; the run's summary line lists the tier with `reason`."""
    if tier not in PRIVILEGED_TIERS:
        raise ValueError(f"unknown privileged tier {tier!r}: one of {', '.join(PRIVILEGED_TIERS)}")
    pytest.skip(f"privileged tier [{tier}]: {reason}")


def _skip_reason(report) -> str | None:
    # A skip's longrepr is (path, line, "Skipped: reason"); xdist may hand it back as a list.
    longrepr = report.longrepr
    if isinstance(longrepr, (tuple, list)) and len(longrepr) == 3 and isinstance(longrepr[2], str):
        return longrepr[2].removeprefix("Skipped: ")
    return None


def privileged_summary(skipped_reports: Iterable) -> str | None:
    """One line naming each privileged tier that was skipped, how many tests and why, or None when none
    was: `privileged tiers skipped: network namespaces (1 test: <reason>); tmpfs mounts (12 tests: <reason>)`.
    Tiers in PRIVILEGED_TIERS' order and a tier's distinct reasons sorted, joined by ` | ` (only a reason's
    first line): under pytest-xdist reports arrive in whatever order the workers finish."""
    reasons: dict[str, set[str]] = {}
    counts: dict[str, int] = {}
    for report in skipped_reports:
        match = _PRIVILEGED.match(_skip_reason(report) or "")
        if match is None or match["tier"] not in PRIVILEGED_TIERS:
            continue
        tier = match["tier"]
        reasons.setdefault(tier, set()).add(match["reason"].split("\n", 1)[0])
        counts[tier] = counts.get(tier, 0) + 1
    if not reasons:
        return None
    parts = []
    for tier in sorted(reasons, key=PRIVILEGED_TIERS.index):
        tests = f"{counts[tier]} test{'s' if counts[tier] != 1 else ''}"
        parts.append(f"{tier} ({tests}: {' | '.join(sorted(reasons[tier]))})")
    return "privileged tiers skipped: " + "; ".join(parts)


def unmarked_fixture_uses(items: Iterable, required_marks: Mapping[str, tuple[tuple[str, ...], str]]) -> list[str]:
    """One line per test that uses a fixture of `required_marks` (name -> (marks, what it does)) without
    one of those marks. A fixture's dependencies are in a test's `fixturenames`, so a module's fixture
    built on `checkpoint` counts as using `checkpoint`."""
    problems = []
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        for fixture, (marks, why) in required_marks.items():
            if fixture not in item.fixturenames:
                continue
            missing = [mark for mark in marks if item.get_closest_marker(mark) is None]
            if missing:
                needed = " and ".join(f"@pytest.mark.{mark}" for mark in missing)
                problems.append(f"{item.nodeid} uses the fixture `{fixture}` ({why}) without {needed}")
    return problems


def fail_collection_on_unmarked(report, required_marks: Mapping[str, tuple[tuple[str, ...], str]]):
    """Turns a collector's report into a collection error when one of its tests breaks `required_marks`
    (for a `pytest_make_collect_report` wrapper). A collection error, not a UsageError: pytest-xdist's
    workers report it like any broken module, where a UsageError raised in a worker ends in an
    INTERNALERROR that hides the message; and `--co` shows it."""
    if report.passed:
        problems = unmarked_fixture_uses(report.result, required_marks)
        if problems:
            report.outcome = "failed"
            report.longrepr = "\n".join(problems)
            report.result = []
    return report


class Checks:
    """The plugin conftest.py registers (`pytest_configure`): the collection rule of `fixture_marks`
    (fixture name -> (marks, what it does)) and the summary line of skipped privileged tiers. A plugin
    object, not hooks written into conftest.py, so that tests/test_tiers.py runs these very hooks on the
    test files it generates."""

    def __init__(self, fixture_marks: Mapping[str, tuple[tuple[str, ...], str]]):
        self.fixture_marks = fixture_marks

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(self, collector):
        report = yield
        return fail_collection_on_unmarked(report, self.fixture_marks)

    def pytest_terminal_summary(self, terminalreporter):
        # Under pytest-xdist this runs in the controller, whose `skipped` stats hold every worker's reports.
        line = privileged_summary(terminalreporter.stats.get("skipped", []))
        if line:
            terminalreporter.write_line(line, yellow=True, bold=True)
