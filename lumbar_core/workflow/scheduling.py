"""One pending re-selection timer per Snakemake scheduler, not one per finished job.

Snakemake 9's ``JobScheduler`` ends every scheduling pass that leaves jobs waiting by
starting a ``threading.Timer`` that runs another pass one timespan later
(``_schedule_reevalutation``; the timespan is that of ``--max-jobs-per-timespan``,
``1s`` by default). The pass run by that timer starts a timer of its own, and so does the
pass that follows every finished job. Each job that finishes while others wait thus
starts a chain of timers that lives until nothing is ready any more: on 2 cores the demo
had 377 of them alive while it trained its networks. Every pass re-reads the size of
each input of every waiting job and re-runs the job selection, and together they took
40 to 90 % of one core away from the jobs.

One pending timer is enough for what the timers are for (a pass within one timespan
after the rate limit was reached, or while waiting for queue input):
:func:`coalesce_reevaluation_timers` replaces the method by one that keeps a single
pending timer per scheduler, moved earlier when a shorter delay is asked for. The timer
is a daemon thread, so a finished run exits when its last job ends instead of when its
last timer fires. The workflow applies it when it is parsed (``rules/common.smk``).

The method is private (and misspelt) in Snakemake, so the patch is applied only to the
Snakemake versions it was tested on, :data:`TESTED_SNAKEMAKE`; on any other version it
warns and changes nothing, so a renamed or rewritten method can neither silently drop the
fix nor stall scheduling. ``pyproject.toml`` pins Snakemake to the same range. To widen
it, run ``tests/test_scheduling.py`` on the new version (it runs a real Snakemake and
checks the timers left at the end) and update both. ``docs/snakemake-timer-report.md``
is the upstream report of the behaviour.
"""

from __future__ import annotations

import threading
import time
import warnings

__all__ = ["TESTED_SNAKEMAKE", "coalesce_reevaluation_timers"]

#: Snakemake versions the patch was tested on (a PEP 440 specifier; the same range as the
#: ``snakemake`` dependency in ``pyproject.toml``).
TESTED_SNAKEMAKE = ">=9.27.1,<9.28"

_METHOD = "_schedule_reevalutation"  # sic, Snakemake's spelling
_MARK = "_lumbar_coalesced"


def _schedule_one(self, delay) -> None:
    """Make sure one pass runs within ``delay`` seconds, with one pending timer at most."""
    lock = self.__dict__.setdefault("_lumbar_timer_lock", threading.Lock())
    due = time.monotonic() + delay
    with lock:
        pending = self.__dict__.get("_lumbar_timer")
        if pending is not None:
            if pending.due <= due:
                return
            pending.cancel()

        def fire():
            with lock:
                if self.__dict__.get("_lumbar_timer") is timer:
                    self._lumbar_timer = None
            # After the slot is free: the pass this starts may ask for the next timer.
            self._open_jobs.release()

        timer = threading.Timer(delay, fire)
        timer.due = due
        timer.daemon = True
        self._lumbar_timer = timer
        timer.start()


setattr(_schedule_one, _MARK, True)


def coalesce_reevaluation_timers(scheduler_class=None, *, version=None) -> bool:
    """Patch ``scheduler_class._schedule_reevalutation`` to keep one pending timer.

    Parameters
    ----------
    scheduler_class : type, optional
        The class to patch; default Snakemake's
        ``snakemake.scheduling.job_scheduler.JobScheduler``. Its instances must have
        the ``_open_jobs`` semaphore whose release starts a scheduling pass.
    version : str, optional
        The Snakemake version the class belongs to; default the installed
        ``snakemake.__version__``. The patch is applied only when it lies in
        :data:`TESTED_SNAKEMAKE`.

    Returns
    -------
    patched : bool
        True when the method is (now or already) the coalescing one. False, with a
        ``RuntimeWarning`` and nothing changed, when the version lies outside
        :data:`TESTED_SNAKEMAKE` or the class has no such method.
    """
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    if scheduler_class is None:
        try:
            import snakemake
            from snakemake.scheduling.job_scheduler import JobScheduler as scheduler_class
        except ImportError:
            warnings.warn("Snakemake's JobScheduler not found: scheduler timers not coalesced",
                          RuntimeWarning, stacklevel=2)
            return False
        if version is None:
            version = snakemake.__version__
    if version is not None:
        try:
            tested = Version(str(version)) in SpecifierSet(TESTED_SNAKEMAKE)
        except InvalidVersion:
            tested = False
        if not tested:
            warnings.warn(
                f"Snakemake {version} is outside the versions the scheduler-timer patch was "
                f"tested on ({TESTED_SNAKEMAKE}): running without it (expect snakemake "
                "itself to use more CPU while many jobs wait)",
                RuntimeWarning, stacklevel=2)
            return False
    method = getattr(scheduler_class, _METHOD, None)
    if method is None:
        warnings.warn(f"{scheduler_class.__qualname__} has no {_METHOD}: scheduler timers "
                      "not coalesced", RuntimeWarning, stacklevel=2)
        return False
    if not getattr(method, _MARK, False):
        setattr(scheduler_class, _METHOD, _schedule_one)
    return True
