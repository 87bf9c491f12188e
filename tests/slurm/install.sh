#!/usr/bin/env bash
# Installs what the SLURM tests need (a single-node SLURM, munge, an sshd) when any of it is
# missing. The SLURM tests' session fixture runs it when a program is missing (CI runs as root on a
# fresh Debian machine); it can also be run by hand.
set -euo pipefail

needed=(slurmctld slurmd sbatch munged sshd)
missing=0
for program in "${needed[@]}"; do
    if ! command -v "$program" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$program" ]; then
        missing=1
    fi
done
if [ "$missing" -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "slurm tests: slurmctld, slurmd, slurm-client, munge and openssh-server are missing;" \
        "run this script as root to install them" >&2
    exit 0
fi
packages=(slurmctld slurmd slurm-client munge openssh-server)
apt_options=(-y --no-install-recommends -o DPkg::Lock::Timeout=600)
export DEBIAN_FRONTEND=noninteractive
# The package lists of a fresh machine are empty (or stale): refresh them when the install fails.
if ! apt-get install "${apt_options[@]}" -qq "${packages[@]}" >/dev/null 2>&1; then
    apt-get update -o DPkg::Lock::Timeout=600 -qq
    apt-get install "${apt_options[@]}" -qq "${packages[@]}" >/dev/null
fi
