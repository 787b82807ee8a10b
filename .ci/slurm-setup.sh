#!/usr/bin/env bash
# Installs what tests/test_slurm.py needs to start its one-node SLURM cluster: Debian's
# slurm-wlm and munge. Does nothing when they are there already; without root or apt the
# SLURM tests skip themselves with the reason, so this step never fails the run.
set -u
missing=0
for tool in munged slurmctld slurmd sinfo squeue sbatch scancel srun; do
    command -v "$tool" >/dev/null 2>&1 || missing=1
done
if [ "$missing" -eq 0 ]; then
    echo "slurm-setup: slurm-wlm and munge already installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "slurm-setup: not root or no apt-get; the SLURM tests will skip"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if apt-get update -q && apt-get install -y -q slurm-wlm munge; then
    echo "slurm-setup: installed slurm-wlm and munge"
else
    echo "slurm-setup: apt-get failed; the SLURM tests will skip"
fi
exit 0
