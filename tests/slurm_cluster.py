"""A throw-away one-node SLURM cluster on localhost, for workflow tests.

:func:`start_cluster` writes a ``slurm.conf`` for this machine into a temporary folder,
creates a munge key, starts ``munged``, ``slurmctld`` and ``slurmd`` in the foreground
(so their pids are known), waits until ``sinfo`` reports the node idle, and returns a
:class:`SlurmCluster` whose ``env`` carries ``SLURM_CONF``. :meth:`SlurmCluster.stop`
stops exactly those daemons, by pid. The fixture :func:`slurm_cluster` wraps both for a
pytest session; it skips, with the reason, wherever the daemons cannot run.

Debian's ``slurm-wlm`` and ``munge`` are installed with apt when they are missing and
the tests run as root. Known to work with slurm-wlm 22.05: ``proctrack/linuxproc``,
``task/none`` and ``select/cons_tres`` (so it also runs in containers without cgroups),
no accounting database. The node has two partitions, ``cpu`` (the default) and ``gpu``,
named as in the workflow's SLURM profile, and one fake GPU (a ``gpu`` GRES bound to
``/dev/null``), so that jobs asking for ``--gpus=1`` are scheduled and get
``CUDA_VISIBLE_DEVICES=0`` from SLURM as on a real GPU node.

Snakemake's ``slurm-jobstep`` executor removes ``SLURM_CONF`` (like every ``SLURM_*``
variable) before it calls ``srun`` inside a job, so ``srun`` reads the configuration from
the compiled-in default path ``/etc/slurm/slurm.conf``. While the cluster runs, that path
is a symbolic link to the temporary ``slurm.conf``; the cluster is refused (skipped)
where a real file already lives there.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ["ClusterUnavailable", "SlurmCluster", "ensure_slurm", "start_cluster", "slurm_cluster"]

_DAEMONS = ("munged", "slurmctld", "slurmd")
_CLIENTS = ("sinfo", "squeue", "sbatch", "scancel", "srun")
_DEFAULT_CONF = Path("/etc/slurm/slurm.conf")
PARTITIONS = ("cpu", "gpu")


class ClusterUnavailable(RuntimeError):
    """The cluster cannot be installed or started here; the message says why."""


@dataclass
class SlurmCluster:
    """A running one-node cluster.

    Attributes
    ----------
    conf_dir : Path
        Folder with ``slurm.conf``, the munge key and socket, state and daemon logs.
    env : dict of str -> str
        ``os.environ`` plus ``SLURM_CONF``: pass it to ``sbatch``, ``squeue`` and
        Snakemake.
    node : str
        The node's name (the short host name).
    cpus, memory_mb : int
        What the node offers.
    processes : dict of str -> subprocess.Popen
        The daemons started, by name.
    default_link : Path or None
        The link at the default configuration path made for this cluster, if any.
    """

    conf_dir: Path
    env: dict
    node: str
    cpus: int
    memory_mb: int
    processes: dict = field(default_factory=dict)
    default_link: Path | None = None

    @property
    def slurmctld_log(self) -> Path:
        """The controller's log; it has one ``_slurm_rpc_submit_batch_job`` line per job."""
        return self.conf_dir / "slurmctld.log"

    def submitted_job_ids(self) -> list[int]:
        """Ids of all batch jobs submitted so far, read from the controller's log."""
        if not self.slurmctld_log.exists():
            return []
        ids = []
        for line in self.slurmctld_log.read_text(errors="replace").splitlines():
            if "_slurm_rpc_submit_batch_job:" in line and "JobId=" in line:
                ids.append(int(line.split("JobId=")[1].split()[0]))
        return ids

    def run(self, *args, **kwargs) -> subprocess.CompletedProcess:
        """Run a SLURM client command (``sinfo``, ...) against this cluster."""
        return subprocess.run(
            list(args), env=self.env, capture_output=True, text=True, timeout=60, **kwargs
        )

    def stop(self) -> None:
        """Stop the daemons this cluster started (by pid), the compute daemon first.

        Jobs still queued or running on it are cancelled first. Also removes the link at
        the default configuration path made for it.
        """
        ctld = self.processes.get("slurmctld")
        if ctld is not None and ctld.poll() is None:
            try:
                left = self.run("squeue", "-h", "-o", "%i").stdout.split()
                if left:
                    self.run("scancel", *left)
                    deadline = time.monotonic() + 15
                    while self.run("squeue", "-h").stdout.strip():
                        if time.monotonic() > deadline:
                            break
                        time.sleep(0.5)
            except (OSError, subprocess.SubprocessError):
                pass  # the daemons are stopped below in any case
        for name in reversed(_DAEMONS):
            proc = self.processes.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=20)
        link = self.default_link
        if link is not None and link.is_symlink() and Path(os.readlink(link)).parent == self.conf_dir:
            link.unlink()
        self.default_link = None


def _missing_tools() -> list[str]:
    return [t for t in (*_DAEMONS, *_CLIENTS) if shutil.which(t) is None]


def ensure_slurm() -> None:
    """Install ``slurm-wlm`` and ``munge`` with apt if missing (root only).

    Raises
    ------
    ClusterUnavailable
        If a tool is missing and cannot be installed.
    """
    if not _missing_tools():
        return
    if os.geteuid() != 0:
        raise ClusterUnavailable(
            f"SLURM tools missing ({', '.join(_missing_tools())}) and not root to install them"
        )
    if shutil.which("apt-get") is None:
        raise ClusterUnavailable("SLURM tools missing and no apt-get to install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "slurm-wlm", "munge"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise ClusterUnavailable(f"{' '.join(cmd)} failed: {done.stderr[-500:]}")
    if _missing_tools():
        raise ClusterUnavailable(f"still missing after apt: {', '.join(_missing_tools())}")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _hardware() -> dict:
    """Node line of ``slurmd -C`` as a dict (NodeName, CPUs, ..., RealMemory)."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=60)
    first = out.stdout.splitlines()[0] if out.stdout else ""
    fields = dict(item.split("=", 1) for item in first.split() if "=" in item)
    if "NodeName" not in fields or "CPUs" not in fields:
        raise ClusterUnavailable(f"slurmd -C gave no node line: {out.stdout}{out.stderr}")
    return fields


def _write_conf(conf_dir: Path, hw: dict, user: str) -> Path:
    ctld_port, d_port = _free_ports(2)
    node = hw["NodeName"]
    hardware = " ".join(
        f"{k}={hw[k]}"
        for k in ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore",
                  "RealMemory")
        if k in hw
    )
    text = f"""\
ClusterName=lumbartest
GresTypes=gpu
SlurmctldHost={node}(127.0.0.1)
SlurmUser={user}
SlurmdUser={user}
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={conf_dir}/munge.socket
StateSaveLocation={conf_dir}/state
SlurmdSpoolDir={conf_dir}/spool
SlurmctldPidFile={conf_dir}/slurmctld.pid
SlurmdPidFile={conf_dir}/slurmd.pid
SlurmctldLogFile={conf_dir}/slurmctld.log
SlurmdLogFile={conf_dir}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
SchedulerType=sched/backfill
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
KillWait=5
InactiveLimit=0
NodeName={node} NodeAddr=127.0.0.1 {hardware} Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
PartitionName=gpu Nodes={node} Default=NO MaxTime=INFINITE State=UP OverSubscribe=NO
"""
    conf = conf_dir / "slurm.conf"
    conf.write_text(text)
    # One fake GPU: SLURM schedules it and sets CUDA_VISIBLE_DEVICES as for a real one.
    (conf_dir / "gres.conf").write_text(f"NodeName={node} Name=gpu File=/dev/null\n")
    return conf


def _alive(pid_file: Path) -> bool:
    """Whether the process named in a daemon's pid file still runs."""
    try:
        os.kill(int(pid_file.read_text().split()[0]), 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def _link_default_conf(conf: Path) -> Path:
    """Point the compiled-in default configuration path at ``conf``."""
    if _DEFAULT_CONF.exists() and not _DEFAULT_CONF.is_symlink():
        raise ClusterUnavailable(
            f"{_DEFAULT_CONF} exists (a real SLURM installation?); not replacing it"
        )
    if _DEFAULT_CONF.is_symlink():
        target = Path(os.readlink(_DEFAULT_CONF))
        if _alive(target.parent / "slurmctld.pid"):
            raise ClusterUnavailable(f"{_DEFAULT_CONF} links to the running cluster {target}")
        _DEFAULT_CONF.unlink()  # left behind by an earlier run that was killed
    try:
        _DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
        _DEFAULT_CONF.symlink_to(conf)
    except OSError as err:
        raise ClusterUnavailable(f"cannot link {_DEFAULT_CONF}: {err}") from err
    return _DEFAULT_CONF


def _log_tail(path: Path, n: int = 15) -> str:
    if not path.exists():
        return f"(no {path.name})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def _start(cluster: SlurmCluster, name: str, cmd: list[str]) -> None:
    log = open(cluster.conf_dir / f"{name}.stdout", "w")
    cluster.processes[name] = subprocess.Popen(
        cmd, env=cluster.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    log.close()


def _wait(cluster: SlurmCluster, name: str, ready, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = cluster.processes[name]
        if proc.poll() is not None:
            raise ClusterUnavailable(
                f"{name} exited with {proc.returncode}:\n{_log_tail(log)}\n"
                f"{_log_tail(cluster.conf_dir / f'{name}.stdout')}"
            )
        if ready():
            return
        time.sleep(0.5)
    raise ClusterUnavailable(f"{name} not ready after {timeout} s:\n{_log_tail(log)}")


def start_cluster(conf_dir: str | os.PathLike, *, timeout: float = 90) -> SlurmCluster:
    """Install if needed, configure and start a one-node cluster in ``conf_dir``.

    Parameters
    ----------
    conf_dir : str or path-like
        Empty folder for the configuration, state and logs.
    timeout : float, optional
        Seconds to wait for each daemon, and for the node to become idle. Default 90.

    Returns
    -------
    SlurmCluster
        The running cluster; call :meth:`SlurmCluster.stop` when done.

    Raises
    ------
    ClusterUnavailable
        If SLURM cannot be installed or a daemon does not come up (the message has the
        tail of its log). Daemons already started are stopped first.
    """
    ensure_slurm()
    conf_dir = Path(conf_dir).resolve()
    for sub in ("state", "spool"):
        (conf_dir / sub).mkdir(parents=True, exist_ok=True)
    conf_dir.chmod(0o755)
    user = getpass.getuser()
    hw = _hardware()
    conf = _write_conf(conf_dir, hw, user)
    key = conf_dir / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    cluster = SlurmCluster(
        conf_dir=conf_dir, env=env, node=hw["NodeName"], cpus=int(hw["CPUs"]),
        memory_mb=int(hw.get("RealMemory", 1)),
    )
    socket_path = conf_dir / "munge.socket"
    try:
        cluster.default_link = _link_default_conf(conf)
        _start(cluster, "munged", [
            "munged", "--foreground", "--force", f"--key-file={key}",
            f"--socket={socket_path}", f"--pid-file={conf_dir / 'munged.pid'}",
            f"--log-file={conf_dir / 'munged.log'}", f"--seed-file={conf_dir / 'munged.seed'}",
        ])
        _wait(cluster, "munged", socket_path.exists, timeout, conf_dir / "munged.log")
        _start(cluster, "slurmctld", ["slurmctld", "-D", "-c", "-f", str(conf)])
        _wait(cluster, "slurmctld", lambda: cluster.run("sinfo", "-h").returncode == 0,
              timeout, cluster.slurmctld_log)
        _start(cluster, "slurmd", ["slurmd", "-D", "-f", str(conf), "-N", cluster.node])

        def idle():
            states = cluster.run("sinfo", "-h", "-N", "-o", "%T").stdout.split()
            return bool(states) and all(s == "idle" for s in states)

        _wait(cluster, "slurmd", idle, timeout, conf_dir / "slurmd.log")
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running one-node SLURM cluster for the session; skips with the reason if none."""
    try:
        cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    except (ClusterUnavailable, OSError, subprocess.SubprocessError) as err:
        pytest.skip(f"no SLURM cluster: {err}")
    try:
        yield cluster
    finally:
        cluster.stop()
