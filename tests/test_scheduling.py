"""lumbar_core.workflow.scheduling: one pending re-selection timer per Snakemake scheduler."""

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from lumbar_core.workflow.scheduling import TESTED_SNAKEMAKE, coalesce_reevaluation_timers

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


class _Scheduler:
    """What the patched method uses of Snakemake's JobScheduler."""

    def __init__(self):
        self._open_jobs = threading.Semaphore(0)

    def _schedule_reevalutation(self, delay):  # the original: one new timer a call
        threading.Timer(delay, self._open_jobs.release).start()


def _timers():
    return [t for t in threading.enumerate() if isinstance(t, threading.Timer)]


def _passes(scheduler, wait):
    """Scheduling passes the timers started within ``wait`` seconds."""
    time.sleep(wait)
    n = 0
    while scheduler._open_jobs.acquire(blocking=False):
        n += 1
    return n


@pytest.fixture
def scheduler_class():
    class Scheduler(_Scheduler):
        pass

    return Scheduler


def test_unpatched_scheduler_starts_a_timer_per_call(scheduler_class):
    """The behaviour being fixed, on the stand-in: 20 calls, 20 passes."""
    s = scheduler_class()
    for _ in range(20):
        s._schedule_reevalutation(0.05)
    assert _passes(s, 0.3) == 20


def test_many_requests_make_one_pass_and_the_chain_goes_on(scheduler_class):
    assert coalesce_reevaluation_timers(scheduler_class)
    s = scheduler_class()
    before = len(_timers())
    for _ in range(50):
        s._schedule_reevalutation(0.1)
    assert len(_timers()) - before == 1
    assert _passes(s, 0.3) == 1
    # The pass the timer started asks again: a new timer, so waiting jobs are never stranded.
    s._schedule_reevalutation(0.05)
    assert _passes(s, 0.2) == 1


def test_a_shorter_delay_moves_the_pending_timer_earlier(scheduler_class):
    coalesce_reevaluation_timers(scheduler_class)
    s = scheduler_class()
    s._schedule_reevalutation(30.0)
    s._schedule_reevalutation(0.05)
    assert _passes(s, 0.3) == 1
    assert not [t for t in _timers() if getattr(t, "due", 0) > time.monotonic() + 1]


def test_patch_is_idempotent_and_skips_other_classes(scheduler_class):
    assert coalesce_reevaluation_timers(scheduler_class)
    patched = scheduler_class._schedule_reevalutation
    assert coalesce_reevaluation_timers(scheduler_class)
    assert scheduler_class._schedule_reevalutation is patched
    with pytest.warns(RuntimeWarning, match="has no _schedule_reevalutation"):
        assert coalesce_reevaluation_timers(type("Other", (), {})) is False


@pytest.mark.parametrize("version", ["9.27.0", "9.28.0", "10.0.0", "8.30.1", "not-a-version"])
def test_untested_snakemake_version_warns_and_is_left_alone(scheduler_class, version):
    original = scheduler_class._schedule_reevalutation
    with pytest.warns(RuntimeWarning, match="outside the versions"):
        assert coalesce_reevaluation_timers(scheduler_class, version=version) is False
    assert scheduler_class._schedule_reevalutation is original


@pytest.mark.parametrize("version", ["9.27.1", "9.27.5"])
def test_tested_snakemake_version_is_patched(scheduler_class, version):
    assert coalesce_reevaluation_timers(scheduler_class, version=version)
    assert scheduler_class._schedule_reevalutation is not _Scheduler._schedule_reevalutation


def test_dependency_pin_is_the_tested_range():
    """pyproject.toml installs exactly the Snakemake versions the patch was tested on."""
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"snakemake{TESTED_SNAKEMAKE}" in deps


def test_installed_snakemake_is_patched_by_default():
    """The workflow's own call (no arguments) patches the installed Snakemake."""
    import snakemake
    from packaging.specifiers import SpecifierSet
    from snakemake.scheduling.job_scheduler import JobScheduler

    assert snakemake.__version__ in SpecifierSet(TESTED_SNAKEMAKE)
    assert coalesce_reevaluation_timers()
    assert getattr(JobScheduler._schedule_reevalutation, "_lumbar_coalesced", False)


def test_installed_snakemake_has_the_method_it_patches():
    """If Snakemake renames it, the workflow silently loses the fix: this says so."""
    from snakemake.scheduling.job_scheduler import JobScheduler

    assert hasattr(JobScheduler, "_schedule_reevalutation")


_SNAKEFILE = textwrap.dedent(
    """
    import sys, threading
    sys.path.insert(0, {repo!r})
    from lumbar_core.workflow.scheduling import TESTED_SNAKEMAKE, coalesce_reevaluation_timers

    if config.get("patch"):
        coalesce_reevaluation_timers()

    rule all:
        input: expand("out/{{i}}.txt", i=range(30))

    rule one:
        output: "out/{{i}}.txt"
        shell: "sleep 0.05; touch {{output}}"

    onsuccess:
        timers = [t for t in threading.enumerate() if isinstance(t, threading.Timer)]
        with open("timers.txt", "w") as fh:
            fh.write(str(len(timers)))
    """
)


@pytest.mark.parametrize("patch", [False, True])
def test_snakemake_run_ends_with_one_timer_at_most(tmp_path, patch):
    """Real Snakemake, 30 jobs on one core: the timers alive when the run ends."""
    (tmp_path / "Snakefile").write_text(_SNAKEFILE.format(repo=str(REPO)))
    cmd = [str(SNAKEMAKE), "--cores", "1", "--quiet", "all"]
    if patch:
        cmd += ["--config", "patch=1"]
    subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True, timeout=120)
    timers = int((tmp_path / "timers.txt").read_text())
    if patch:
        assert timers <= 1
    else:
        # Without the fix every job that finished while others waited left a chain.
        assert timers > 5
