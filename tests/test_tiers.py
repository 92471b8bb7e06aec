"""tests/tiers.py run for real: pytest in a subprocess (pytester) on small test files written here, whose
conftest.py registers the real `tiers.Checks` plugin and calls the real helpers, as tests/conftest.py does.

- a missing setup that the repository installs skips outside CI and fails in CI, naming what is missing
  and what installs it;
- privileged tiers skip in CI too, and the run ends with one line naming each, also under pytest-xdist
  (`make test`'s `-n 2 --dist loadfile`, where skips reach the controller as reports);
- a test that uses a slow fixture without its marks is a collection error naming the test and the fixture.

The xdist runs take seconds (two worker processes start) and are marked slow; the rest is under a second
each and stays in the fast tier.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import tiers

pytest_plugins = ["pytester"]

TESTS = Path(__file__).resolve().parent
XDIST = ["-n", "2", "--dist", "loadfile"]
SUMMARY = "privileged tiers skipped: "

# What the generated conftest.py holds: the real helpers, found where tests/conftest.py finds them.
CONFTEST = f"""
import sys

import pytest

sys.path.insert(0, {str(TESTS)!r})
import tiers

FIXTURE_MARKS = {{
    "trained": (("slow",), "trains a model"),
    "cluster": (("slow", "slurm"), "starts a cluster"),
}}


def pytest_configure(config):
    config.pluginmanager.register(tiers.Checks(FIXTURE_MARKS), "llava-tiers")


@pytest.fixture(scope="session")
def trained():
    return "weights"


@pytest.fixture
def cluster():
    return "nodes"
"""


@pytest.fixture
def generated(pytester, monkeypatch):
    """A pytester folder with the conftest above and the markers registered, run in a fresh process whose
    environment holds no CI and nothing of an outer xdist worker (each test sets CI as it needs)."""
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    slow: slow\n    slurm: slurm\n")
    for name in ("CI", "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_ADDOPTS"):
        monkeypatch.delenv(name, raising=False)
    return pytester


def run(pytester, *args):
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", *args, timeout=120)
    return result, result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize(("ci", "outcome"), [(None, "skipped"), ("true", "failed"), ("false", "skipped")])
def test_missing_installed_setup_skips_outside_ci_and_fails_in_ci(generated, monkeypatch, ci, outcome):
    generated.makepyfile(
        test_needs_setup="""
        from tiers import require_installed

        def test_needs_the_tool():
            require_installed("the tool", ".ci/setup_tool.sh", "tool not found on PATH")
        """
    )
    if ci is not None:
        monkeypatch.setenv("CI", ci)
    result, out = run(generated)
    result.assert_outcomes(**{outcome: 1})
    assert "the tool (installed by .ci/setup_tool.sh): tool not found on PATH" in out
    if outcome == "failed":
        assert "missing in CI: the tool (installed by .ci/setup_tool.sh)" in out
        assert "fails instead of skipping" in out
    else:
        assert "missing in CI" not in out
    assert SUMMARY not in out  # not a privileged tier


@pytest.mark.parametrize(
    "xdist", [pytest.param([], id="one-process"), pytest.param(XDIST, id="xdist", marks=pytest.mark.slow)]
)
def test_privileged_tiers_skip_in_ci_and_one_line_names_them(generated, monkeypatch, xdist):
    # two files, so that under --dist loadfile each worker skips some and the controller gathers both
    generated.makepyfile(
        test_disks="""
        import pytest
        from tiers import skip_privileged

        def test_full_disk():
            skip_privileged("tmpfs mounts", "mount -t tmpfs: permission denied")

        def test_read_only_disk():
            skip_privileged("tmpfs mounts", "mount -t tmpfs: permission denied")

        def test_other_disk():
            skip_privileged("tmpfs mounts", "no mount command")

        def test_a_gpu_is_here():
            pytest.skip("the machine has a GPU")
        """,
        test_nodes="""
        from tiers import skip_privileged

        def test_two_nodes():
            skip_privileged("network namespaces", "they need root (the test runs as uid 1000)\\nmore detail")

        def test_runs():
            pass
        """,
    )
    monkeypatch.setenv("CI", "true")
    result, out = run(generated, *xdist)
    result.assert_outcomes(passed=1, skipped=5)
    if xdist:
        assert "2 workers" in out, out
    lines = [line for line in out.splitlines() if line.startswith(SUMMARY)]
    assert lines == [
        "privileged tiers skipped: network namespaces (1 test: they need root (the test runs as uid 1000)); "
        "tmpfs mounts (3 tests: mount -t tmpfs: permission denied | no mount command)"
    ], out


def test_skip_privileged_knows_only_the_privileged_tiers():
    with pytest.raises(ValueError, match="unknown privileged tier 'slurm': one of network namespaces, tmpfs mounts"):
        tiers.skip_privileged("slurm", "a tier CI installs is not privileged")


@pytest.mark.parametrize(
    "args", [pytest.param(["--co", "-q"], id="collect-only"), pytest.param(XDIST, id="xdist", marks=pytest.mark.slow)]
)
def test_a_slow_fixture_without_its_marks_fails_collection_naming_test_and_fixture(generated, args):
    generated.makepyfile(
        test_unmarked="""
        import pytest

        @pytest.fixture
        def model(trained):  # a module's fixture built on a slow one
            return trained

        @pytest.mark.slow
        def test_marked(trained):
            pass

        def test_through_a_module_fixture(model):
            pass
        """,
        # a class of its own module: a module whose collection fails is not looked into further
        test_unmarked_class="""
        import pytest

        class TestCluster:
            @pytest.mark.slow
            def test_without_slurm(self, cluster):
                pass
        """,
        test_fine="""
        import pytest

        @pytest.mark.slow
        @pytest.mark.slurm
        def test_cluster(cluster):
            pass

        def test_cheap():
            pass
        """,
    )
    result, out = run(generated, *args)
    assert result.ret != 0, out
    assert (
        "test_unmarked.py::test_through_a_module_fixture uses the fixture `trained` (trains a model) "
        "without @pytest.mark.slow" in out
    )
    assert (
        "test_unmarked_class.py::TestCluster::test_without_slurm uses the fixture `cluster` (starts a cluster) "
        "without @pytest.mark.slurm" in out
    )
    assert "::test_marked uses" not in out
    # the well-marked module is untouched: collected, and run where this is not --co
    assert "ERROR collecting test_fine.py" not in out
    if "--co" in args:
        assert "test_fine.py::test_cluster" in out and "test_fine.py::test_cheap" in out
    else:
        assert "2 passed" in out, out
