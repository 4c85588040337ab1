#!/usr/bin/env bash
# Bring up a one-node Slurm cluster on localhost (munged, MariaDB, slurmdbd, slurmctld, slurmd) for the
# workflow's Slurm tests. Idempotent: what runs and is configured as below is left alone; dead daemons are
# restarted; changed configuration restarts the daemons that read it. No systemd: daemons are started by
# hand. Needs root. State (database, spool, logs, pid files, fake GPU files) lives in $STATE.
#
#   .ci/slurm/up.sh      # bring up (or check) the cluster
#   .ci/slurm/down.sh    # stop the daemons (state is kept)
#
# Cluster: partition "debug" (default), account "clipflant5" with user root (and $SUDO_USER), node
# "localhost" with all CPUs, ~85% of the memory and two fake GPUs (gres gpu:2, symlinks to /dev/null).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${CLIP_SLURM_STATE:-/var/lib/clip-flant5-slurm}"
CLUSTER=clipflant5
PARTITION=debug
ACCOUNT=clipflant5
GPUS=2
MEM_MB=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) * 85 / 100 / 1024))
SLURM_ETC=/etc/slurm
MUNGE_KEY=/etc/munge/munge.key
MUNGE_SOCKET_DIR=/run/munge
MYSQL_SOCKET="$STATE/mysqld/mysqld.sock"
export MYSQL_UNIX_PORT="$MYSQL_SOCKET" # read by the MariaDB client library inside slurmdbd
DAEMONS_LOG=(munged.log mariadb-install-db.log mariadbd.log slurmdbd.log slurmctld.log slurmd.log)

log() { printf '[slurm-up] %s\n' "$*"; }

on_error() {
    local rc=$?
    echo "[slurm-up] FAILED (exit $rc) at line ${BASH_LINENO[0]}: $BASH_COMMAND" >&2
    echo "[slurm-up] logs: $STATE/log/{$(IFS=,; echo "${DAEMONS_LOG[*]}")}; configs: $SLURM_ETC/, $STATE/etc/" >&2
    for f in "${DAEMONS_LOG[@]}"; do
        if [[ -s "$STATE/log/$f" ]]; then
            echo "----- last lines of $STATE/log/$f -----" >&2
            tail -n 15 "$STATE/log/$f" >&2 || true
        fi
    done
    exit "$rc"
}
trap on_error ERR

if [[ $EUID -ne 0 ]]; then
    echo "[slurm-up] must run as root (it installs packages and starts daemons)" >&2
    exit 1
fi

# ---- packages ---------------------------------------------------------------------------------------------
need=()
for cmd in munged munge slurmctld slurmd slurmdbd sbatch sacct sacctmgr sinfo scontrol mariadbd mariadb \
    mariadb-install-db mariadb-admin; do
    command -v "$cmd" >/dev/null 2>&1 || need+=("$cmd")
done
if ((${#need[@]})); then
    log "installing Debian packages (missing: ${need[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm slurm-client munge slurmdbd mariadb-server \
        mariadb-client >/dev/null
fi

# The node's CPU layout as slurmd detects it (CPUs, Boards, SocketsPerBoard, CoresPerSocket, ThreadsPerCore).
HARDWARE="$(slurmd -C | grep -o 'CPUs=.*ThreadsPerCore=[0-9]*')"

# ---- state directories and configuration -----------------------------------------------------------------
mkdir -p "$STATE"/{etc,log,run,spool/slurmctld,spool/slurmd,gpu,mysql,mysqld,munge} "$SLURM_ETC" "$MUNGE_SOCKET_DIR"
chown munge:munge "$STATE/munge" "$MUNGE_SOCKET_DIR"
chmod 0700 "$STATE/munge"
chmod 0755 "$MUNGE_SOCKET_DIR"
chown mysql:mysql "$STATE/mysql" "$STATE/mysqld"
for f in munged.log mariadbd.log; do touch "$STATE/log/$f"; done
chown munge:munge "$STATE/log/munged.log"
chown mysql:mysql "$STATE/log/mariadbd.log"
chmod 0640 "$STATE/log/munged.log"
for ((i = 0; i < GPUS; i++)); do
    [[ -L "$STATE/gpu/nvidia$i" ]] || ln -sfn /dev/null "$STATE/gpu/nvidia$i"
done

if [[ ! -s "$MUNGE_KEY" ]]; then
    log "writing a munge key"
    mkdir -p "$(dirname "$MUNGE_KEY")"
    dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
fi
chown munge:munge "$MUNGE_KEY" "$(dirname "$MUNGE_KEY")"
chmod 0400 "$MUNGE_KEY"
chmod 0700 "$(dirname "$MUNGE_KEY")"

# render TEMPLATE DEST MODE: write DEST only when its content changes; prints "changed" if it did.
render() {
    local tmp
    tmp="$(mktemp)"
    sed -e "s|@STATE@|$STATE|g" -e "s|@CLUSTER@|$CLUSTER|g" -e "s|@PARTITION@|$PARTITION|g" \
        -e "s|@HARDWARE@|$HARDWARE|g" -e "s|@MEM_MB@|$MEM_MB|g" -e "s|@GPUS@|$GPUS|g" -e "s|@LAST_GPU@|$((GPUS - 1))|g" \
        "$HERE/$1" >"$tmp"
    if grep -q '@[A-Z_]*@' "$tmp"; then
        echo "[slurm-up] unfilled placeholder in $1" >&2
        return 1
    fi
    if cmp -s "$tmp" "$2"; then
        rm -f "$tmp"
    else
        install -m "$3" "$tmp" "$2"
        rm -f "$tmp"
        echo changed
    fi
}
slurm_changed="$(render slurm.conf.in "$SLURM_ETC/slurm.conf" 0644)"
gres_changed="$(render gres.conf.in "$SLURM_ETC/gres.conf" 0644)"
slurm_changed+="$gres_changed"
dbd_changed="$(render slurmdbd.conf.in "$SLURM_ETC/slurmdbd.conf" 0600)"
mysql_changed="$(render my.cnf.in "$STATE/etc/my.cnf" 0644)"

# ---- process helpers --------------------------------------------------------------------------------------
# alive PIDFILE NAME: the pid in PIDFILE runs a process called NAME.
alive() {
    local pid
    [[ -s "$1" ]] || return 1
    pid="$(cat "$1")"
    [[ "$pid" =~ ^[0-9]+$ ]] && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$2" ]] &&
        [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]] # an unreaped zombie is dead too
}

# stop PIDFILE NAME: TERM the daemon and wait for it to exit.
stop() {
    local pid i
    alive "$1" "$2" || return 0
    pid="$(cat "$1")"
    log "stopping $2 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do
        [[ -d "/proc/$pid" ]] || return 0
        sleep 0.5
    done
    echo "[slurm-up] $2 (pid $pid) did not stop" >&2
    return 1
}

# wait_for SECONDS PIDFILE NAME CMD...: retry CMD until it succeeds; fail after SECONDS, or at once when the
# daemon NAME of PIDFILE has exited (after a grace period for its start; PIDFILE "-" for no daemon).
wait_for() {
    local deadline=$((SECONDS + $1)) grace=$((SECONDS + 5)) pidfile=$2 name=$3
    shift 3
    until "$@" >/dev/null 2>&1; do
        if [[ "$pidfile" != - ]] && ((SECONDS >= grace)) && ! alive "$pidfile" "$name"; then
            echo "[slurm-up] $name exited (see its log)" >&2
            return 1
        fi
        if ((SECONDS >= deadline)); then
            echo "[slurm-up] timed out after $1 s waiting for $name" >&2
            return 1
        fi
        sleep 0.25
    done
}

# ---- munge ------------------------------------------------------------------------------------------------
munge_ok() { munge -n </dev/null | unmunge >/dev/null; }
if ! munge_ok 2>/dev/null; then # any munged on the default socket with this key will do
    stop "$STATE/munge/munged.pid" munged
    log "starting munged"
    runuser -u munge -- munged --pid-file="$STATE/munge/munged.pid" --seed-file="$STATE/munge/munged.seed" \
        --log-file="$STATE/log/munged.log"
    wait_for 20 "$STATE/munge/munged.pid" munged munge_ok
fi

# ---- MariaDB ----------------------------------------------------------------------------------------------
if [[ ! -d "$STATE/mysql/mysql" ]]; then
    log "initialising MariaDB in $STATE/mysql"
    mariadb-install-db --defaults-file="$STATE/etc/my.cnf" --auth-root-authentication-method=socket \
        >"$STATE/log/mariadb-install-db.log" 2>&1
fi
mysql_ok() { mariadb-admin --defaults-file="$STATE/etc/my.cnf" ping; }
if [[ -n "$mysql_changed" ]] || ! alive "$STATE/mysqld/mariadbd.pid" mariadbd || ! mysql_ok >/dev/null 2>&1; then
    stop "$STATE/mysqld/mariadbd.pid" mariadbd
    log "starting mariadbd"
    setsid mariadbd --defaults-file="$STATE/etc/my.cnf" </dev/null >>"$STATE/log/mariadbd.log" 2>&1 &
    wait_for 60 "$STATE/mysqld/mariadbd.pid" mariadbd mysql_ok
fi
mariadb --defaults-file="$STATE/etc/my.cnf" -e 'CREATE DATABASE IF NOT EXISTS slurm_acct_db'

# ---- slurmdbd and the accounting associations -------------------------------------------------------------
dbd_ok() { sacctmgr -n -P show cluster format=cluster; }
if [[ -n "$dbd_changed" ]] || ! alive "$STATE/run/slurmdbd.pid" slurmdbd; then
    stop "$STATE/run/slurmdbd.pid" slurmdbd
    log "starting slurmdbd"
    slurmdbd
    wait_for 60 "$STATE/run/slurmdbd.pid" slurmdbd dbd_ok
fi
if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
    log "adding cluster $CLUSTER"
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi
if ! sacctmgr -n -P show account format=account | grep -qx "$ACCOUNT"; then
    log "adding account $ACCOUNT"
    sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description="CI" Organization="clip-flant5" >/dev/null
fi
users=(root)
if [[ -n "${SUDO_USER:-}" && "${SUDO_USER}" != root ]]; then users+=("$SUDO_USER"); fi
for user in "${users[@]}"; do
    if ! sacctmgr -n -P show assoc cluster="$CLUSTER" account="$ACCOUNT" user="$user" format=user | grep -qx "$user"; then
        log "adding user $user to account $ACCOUNT"
        sacctmgr -i add user "$user" Account="$ACCOUNT" DefaultAccount="$ACCOUNT" >/dev/null
    fi
done

# ---- slurmctld and slurmd ---------------------------------------------------------------------------------
if [[ -n "$slurm_changed" ]]; then
    stop "$STATE/run/slurmd.pid" slurmd
    stop "$STATE/run/slurmctld.pid" slurmctld
fi
if ! alive "$STATE/run/slurmctld.pid" slurmctld; then
    log "starting slurmctld"
    slurmctld
    wait_for 30 "$STATE/run/slurmctld.pid" slurmctld scontrol ping
fi
if ! alive "$STATE/run/slurmd.pid" slurmd; then
    log "starting slurmd -N localhost"
    slurmd -N localhost
fi

# The node comes back by itself (ReturnToService=2) unless it was drained or marked down by hand.
node_state() { sinfo -h -N -n localhost -o %T; }
node_ready() { [[ "$(node_state)" =~ ^(idle|mixed|allocated|completing)$ ]]; }
for ((i = 0; i < 120; i++)); do
    node_ready 2>/dev/null && break
    state="$(node_state 2>/dev/null || true)"
    if [[ "$state" =~ (drain|down) ]] && ((i % 8 == 4)); then
        log "node is $state ($(sinfo -h -N -n localhost -o %E)), resuming it"
        scontrol update NodeName=localhost State=RESUME || true
    fi
    sleep 0.25
done
node_ready || { echo "[slurm-up] node not ready: $(sinfo -N -l 2>&1)" >&2; false; }

# sacct answers from slurmdbd (the snakemake plugin polls job states with it).
sacct_ok() { out="$(sacct -n -X -a -S now-1minute 2>&1)" && ! grep -qi 'disabled' <<<"$out"; }
wait_for 30 - sacct sacct_ok

log "up: cluster $CLUSTER, partition $PARTITION, account $ACCOUNT, node localhost" \
    "($HARDWARE RealMemory=${MEM_MB}MB gpu:$GPUS); logs in $STATE/log"
