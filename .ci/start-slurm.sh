#!/usr/bin/env bash
# Start a real single-node Slurm cluster on this machine (as root), with accounting.
#
# submitit reads job states through `sacct`, so slurmdbd + MariaDB must run: without them a
# cancelled job never reaches a final state. No systemd and no cgroups are assumed:
# ProctrackType=proctrack/linuxproc, TaskPlugin=task/none. Idempotent: when `sinfo` already
# answers with an idle node it exits at once; otherwise it (re)starts only the daemons that are
# not running. Usage: sudo .ci/start-slurm.sh   (about 15 s once the packages are installed)
set -euo pipefail

CLUSTER=${SLURM_CLUSTER_NAME:-ssl3d}
PARTITION=${SLURM_PARTITION:-debug}
DB_PASS=${SLURM_DB_PASS:-ssl3d-slurm}
HOST=$(hostname -s)
LOG=/var/log/slurm

log() { echo "start-slurm: $*"; }
die() { echo "start-slurm: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts daemons)"

node_idle() { sinfo -h -N -o '%T' 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; }
running() { pgrep -x "$1" >/dev/null 2>&1; }

if command -v sinfo >/dev/null 2>&1 && node_idle && command -v sacct >/dev/null && sacct -n -X -S now >/dev/null 2>&1; then
    log "cluster already up: $(sinfo -h -N -o '%N %T')"
    exit 0
fi

# -- packages ---------------------------------------------------------------------------------
PKGS="slurmctld slurmd slurmdbd slurm-client munge mariadb-server"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    log "installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # policy-rc.d 101: do not let package scripts start daemons (no systemd here; we start them)
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
    rm -f /usr/sbin/policy-rc.d
fi

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$LOG" /run/slurm /run/munge /var/log/munge

# -- munge ------------------------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
    if command -v mungekey >/dev/null; then mungekey --create --force; else
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; fi
fi
chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key; chmod 0755 /run/munge
if ! running munged; then
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged
fi
for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.2; done
munge -n | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)"

# -- MariaDB (accounting storage) -------------------------------------------------------------
if ! running mariadbd && ! running mysqld; then
    log "starting mariadb"
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    service mariadb start >/dev/null 2>&1 || (mysqld_safe --user=mysql >/dev/null 2>&1 &)
fi
for _ in $(seq 100); do mysqladmin ping >/dev/null 2>&1 && break; sleep 0.3; done
mysqladmin ping >/dev/null 2>&1 || die "mariadb did not start"
mysql -u root <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '${DB_PASS}';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL

# -- configuration ----------------------------------------------------------------------------
# The node line comes from slurmd itself (CPUs, sockets, memory of this machine); a little
# memory is kept back for the daemons and the OS.
NODE_LINE=$(slurmd -C | head -1)
CPUS=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$NODE_LINE")
MEM=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$NODE_LINE")
MEM=$(( MEM > 2048 ? MEM - 1024 : MEM ))

cat > /etc/slurm/slurm.conf <<EOF
# written by .ci/start-slurm.sh
ClusterName=${CLUSTER}
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
JobRequeue=1
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=${LOG}/slurmctld.log
SlurmdLogFile=${LOG}/slurmd.log
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
MinJobAge=300
KillWait=5
InactiveLimit=0
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM} State=UNKNOWN
PartitionName=${PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

cat > /etc/slurm/slurmdbd.conf <<EOF
# written by .ci/start-slurm.sh
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=/run/slurm/slurmdbd.pid
LogFile=${LOG}/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=${DB_PASS}
StorageLoc=slurm_acct_db
EOF
chmod 600 /etc/slurm/slurmdbd.conf

# No cgroups: proctrack/linuxproc and task/none need none; an empty-plugin cgroup.conf keeps
# slurmd from probing a cgroup hierarchy that a container may not have.
cat > /etc/slurm/cgroup.conf <<EOF
# written by .ci/start-slurm.sh: cgroups are not used on this node
CgroupAutomount=no
EOF

# -- daemons ----------------------------------------------------------------------------------
if ! running slurmdbd; then
    log "starting slurmdbd"
    slurmdbd
fi
for _ in $(seq 100); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.3; done
sacctmgr -n list cluster >/dev/null 2>&1 || die "slurmdbd does not answer (see ${LOG}/slurmdbd.log)"
if ! sacctmgr -n -P list cluster format=cluster | grep -qx "${CLUSTER}"; then
    log "registering cluster ${CLUSTER} in accounting"
    sacctmgr -i add cluster "${CLUSTER}" >/dev/null
fi

if ! running slurmctld; then
    log "starting slurmctld"
    slurmctld
fi
if ! running slurmd; then
    log "starting slurmd"
    slurmd
fi

for _ in $(seq 150); do node_idle && break; sleep 0.2; done
if ! node_idle; then
    # a node left DOWN by an earlier unclean stop comes back with an explicit resume
    scontrol update nodename="${HOST}" state=resume >/dev/null 2>&1 || true
    for _ in $(seq 100); do node_idle && break; sleep 0.2; done
fi
node_idle || die "node did not become idle: $(sinfo -h -N -o '%N %T %E' 2>&1) (see ${LOG}/slurmctld.log, ${LOG}/slurmd.log)"
for _ in $(seq 50); do sacct -n -X -S now >/dev/null 2>&1 && break; sleep 0.2; done
log "cluster up: $(sinfo -h -N -o '%N %T %c CPUs %m MB')"
