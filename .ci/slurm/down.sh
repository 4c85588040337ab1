#!/usr/bin/env bash
# Stop the CI Slurm cluster started by .ci/slurm/up.sh (slurmd, slurmctld, slurmdbd, mariadbd, munged), by the
# pids in their pid files. State (database, spool, logs) stays in $STATE; `down.sh --purge` removes it too.
set -euo pipefail

STATE="${CLIP_SLURM_STATE:-/var/lib/clip-flant5-slurm}"

stop() { # PIDFILE NAME
    local pid i
    [[ -s "$1" ]] || return 0
    pid="$(cat "$1")"
    [[ "$pid" =~ ^[0-9]+$ && "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$2" ]] || return 0
    echo "[slurm-down] stopping $2 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do
        [[ -d "/proc/$pid" ]] || return 0
        sleep 0.5
    done
    echo "[slurm-down] $2 (pid $pid) still running after 30 s; sending KILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
}

stop "$STATE/run/slurmd.pid" slurmd
stop "$STATE/run/slurmctld.pid" slurmctld
stop "$STATE/run/slurmdbd.pid" slurmdbd
stop "$STATE/mysqld/mariadbd.pid" mariadbd
stop "$STATE/munge/munged.pid" munged

if [[ "${1:-}" == --purge ]]; then
    echo "[slurm-down] removing $STATE and the rendered configs in /etc/slurm"
    rm -rf "$STATE"
    rm -f /etc/slurm/slurm.conf /etc/slurm/gres.conf /etc/slurm/slurmdbd.conf
fi
