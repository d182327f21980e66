#!/usr/bin/env bash
# A one-node SLURM on localhost for tests: tests/slurm/cluster.sh start|stop|status SCRATCH_DIR
#
#   start   install Debian's slurmctld slurmd slurm-client munge if missing (apt-get, as root), write
#           SCRATCH_DIR/etc/slurm.conf (one node "localhost" with this machine's CPUs and memory, one
#           default partition "debug", no accounting, proctrack/linuxproc + task/none: no cgroups
#           needed), start munged, slurmctld and slurmd from there and wait until the node is idle.
#           Prints the line to give clients the cluster: export SLURM_CONF=SCRATCH_DIR/etc/slurm.conf
#   stop    cancel this cluster's jobs and stop the daemons start started (their pid files only)
#   status  the daemons' pids and sinfo
#
# When SLURM cannot be installed or started here, start prints one line saying why and exits 77
# (the conventional "skipped" code); the logs stay in SCRATCH_DIR/log. Ports: the first free pair
# from 6817/6818 up (SLURM_TEST_PORT=N to start elsewhere).
set -u

usage() { echo "usage: $0 start|stop|status SCRATCH_DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
CMD=$1
mkdir -p "$2" || usage
S=$(cd "$2" && pwd -P)
CONF=$S/etc/slurm.conf
MUNGE_SOCKET=$S/munge/munge.socket
PIDS=$S/run

skip() { echo "cluster.sh: SLURM test cluster unavailable, skipping: $*"; stop_daemons >/dev/null 2>&1; exit 77; }

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_daemons() {
    if pid_alive "$PIDS/slurmctld.pid"; then
        SLURM_CONF=$CONF timeout 10 scancel --quiet --full "--user=$(id -un)" 2>/dev/null
        for _ in $(seq 30); do  # until no job of ours runs (slurmstepd reports to slurmd, which must still be up)
            [ -z "$(SLURM_CONF=$CONF timeout 5 squeue -h -t RUNNING,COMPLETING -o %i 2>/dev/null)" ] && break; sleep 0.5
        done
    fi
    local d pid
    for d in slurmd slurmctld munged; do
        pid_alive "$PIDS/$d.pid" || continue
        pid=$(cat "$PIDS/$d.pid")
        kill "$pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
        rm -f "$PIDS/$d.pid"
    done
    # a job step whose slurmd is gone waits for it forever: end the slurmstepd processes of this cluster
    for pid in $(pgrep -x slurmstepd); do
        tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "SLURM_CONF=$CONF" && kill -9 "$pid" 2>/dev/null
    done
    return 0
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

install_slurm() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || skip "${missing[*]} not installed and not root (apt-get install ${missing[*]})"
    command -v apt-get >/dev/null || skip "${missing[*]} not installed and no apt-get"
    echo "cluster.sh: installing ${missing[*]} (apt-get, log: $S/log/apt.log)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" >"$S/log/apt.log" 2>&1 \
        || { apt-get update -q >>"$S/log/apt.log" 2>&1 && apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$S/log/apt.log" 2>&1; } \
        || skip "apt-get install ${missing[*]} failed (see $S/log/apt.log)"
}

write_conf() {
    local cpus mem_mb port=${SLURM_TEST_PORT:-6817}
    cpus=$(nproc --all)
    mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    while ! port_free "$port" || ! port_free $((port + 1)); do
        port=$((port + 2)); [ "$port" -lt 6917 ] || skip "no free port pair in 6817-6916"
    done
    cat >"$CONF" <<EOF
# written by tests/slurm/cluster.sh: a one-node SLURM on localhost for tests (no accounting, no cgroups)
ClusterName=mibenchtest
SlurmctldHost=localhost
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=$(id -un)
SlurmdUser=$(id -un)
AuthType=auth/munge
CredType=cred/munge
# cred_expire: also how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool/%n
SlurmctldPidFile=$PIDS/slurmctld.pid
SlurmdPidFile=$PIDS/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$S/etc/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
MinJobAge=30
KillWait=10
InactiveLimit=0
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$S/etc/cgroup.conf" <<EOF
# written by tests/slurm/cluster.sh: unused (proctrack/linuxproc, task/none), present so nothing reads /etc/slurm's
CgroupAutomount=no
EOF
    : >"$S/etc/plugstack.conf"
}

start() {
    mkdir -p "$S"/{etc,state,spool/localhost,log,run,munge} || skip "cannot write $S"
    chmod 700 "$S/munge"
    if pid_alive "$PIDS/slurmctld.pid"; then echo "cluster.sh: already running ($CONF)" >&2; echo "export SLURM_CONF=$CONF"; return 0; fi
    install_slurm
    write_conf

    # munge: own key, socket, pid, log and seed under the scratch dir
    if [ ! -s "$S/munge/munge.key" ]; then
        if command -v mungekey >/dev/null; then mungekey --create --keyfile="$S/munge/munge.key" 2>>"$S/log/munged.log"
        else dd if=/dev/urandom of="$S/munge/munge.key" bs=1 count=1024 status=none; fi || skip "cannot create a munge key"
    fi
    chmod 400 "$S/munge/munge.key"
    munged --force --socket="$MUNGE_SOCKET" --key-file="$S/munge/munge.key" --pid-file="$PIDS/munged.pid" \
        --log-file="$S/log/munged.log" --seed-file="$S/munge/munged.seed" 2>>"$S/log/munged.log" \
        || skip "munged did not start: $(tail -n 1 "$S/log/munged.log")"
    for _ in $(seq 50); do [ -S "$MUNGE_SOCKET" ] && break; sleep 0.1; done
    munge -n --socket="$MUNGE_SOCKET" </dev/null | unmunge --socket="$MUNGE_SOCKET" >/dev/null 2>&1 \
        || skip "munge credentials do not round-trip (see $S/log/munged.log)"

    export SLURM_CONF=$CONF
    slurmctld -c -f "$CONF" 2>>"$S/log/slurmctld.log" || skip "slurmctld did not start: $(tail -n 1 "$S/log/slurmctld.log")"
    slurmd -N localhost -f "$CONF" 2>>"$S/log/slurmd.log" || skip "slurmd did not start: $(tail -n 1 "$S/log/slurmd.log")"
    local state=""
    for _ in $(seq 60); do
        state=$(sinfo -h -n localhost -o %T 2>/dev/null)
        [ "$state" = idle ] && break
        pid_alive "$PIDS/slurmctld.pid" || skip "slurmctld exited: $(tail -n 1 "$S/log/slurmctld.log")"
        pid_alive "$PIDS/slurmd.pid" || skip "slurmd exited: $(tail -n 1 "$S/log/slurmd.log")"
        sleep 0.5
    done
    [ "$state" = idle ] || skip "node not idle after 30 s (state: ${state:-none}; see $S/log)"
    echo "export SLURM_CONF=$CONF"
}

status() {
    local d
    for d in munged slurmctld slurmd; do
        if pid_alive "$PIDS/$d.pid"; then echo "$d: running (pid $(cat "$PIDS/$d.pid"))"; else echo "$d: not running"; fi
    done
    pid_alive "$PIDS/slurmctld.pid" && SLURM_CONF=$CONF sinfo
    pid_alive "$PIDS/slurmctld.pid"
}

case $CMD in
    start) start ;;
    stop) stop_daemons ;;
    status) status ;;
    *) usage ;;
esac
