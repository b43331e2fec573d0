#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, bound to 127.0.0.1, for trying and testing lossplug's
# Slurm paths with Debian's slurm-wlm and munge.
#
#   scripts/slurm_cluster.sh start DIR   installs slurm-wlm and munge if missing (apt, as root),
#                                        writes DIR/slurm.conf, starts munged, slurmctld and slurmd,
#                                        waits until the node is idle, prints `export SLURM_CONF=...`
#   scripts/slurm_cluster.sh stop DIR    cancels every job, stops the three daemons, waits until
#                                        none of their processes is left
#
# Environment: SLURM_CPUS (default: the machine's CPU count), SLURM_PORT (slurmctld's port, default
# 6817; slurmd uses the next one). DIR should be short (munge's socket path lives in it).
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
action=$1
dir=$(realpath -m "$2")
# Lightning reaches a job's first node by its name: localhost resolves on every machine
node=localhost

install_packages() {
  if command -v slurmctld >/dev/null && command -v munged >/dev/null; then return; fi
  if [[ $(id -u) -ne 0 ]]; then
    echo "slurm-wlm and munge are missing; run as root to install them (apt-get install slurm-wlm munge)" >&2
    exit 1
  fi
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
}

wait_for() { # seconds, description, command...
  local seconds=$1 what=$2; shift 2
  for _ in $(seq $((seconds * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "slurm_cluster: $what did not happen within ${seconds}s; logs in $dir" >&2
  return 1
}

queue_empty() { [[ -z $(squeue -h 2>/dev/null) ]]; }

node_idle() { [[ $(sinfo -h -n "$node" -o %t) == idle ]]; }

write_config() {
  local cpus=${SLURM_CPUS:-$(nproc)} port=${SLURM_PORT:-6817}
  local memory
  memory=$(awk '/MemTotal/ {print int($2 / 1024 / 2)}' /proc/meminfo)
  cat >"$dir/slurm.conf" <<EOF
ClusterName=lossplug
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# a requeued job waits cred_expire seconds before it may start again (default 120)
AuthInfo=socket=$dir/munge.socket,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
JobRequeue=1
KillWait=10
InactiveLimit=0
MinJobAge=300
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
  install_packages
  mkdir -p "$dir/state" "$dir/spool"
  chmod 700 "$dir"
  write_config
  export SLURM_CONF=$dir/slurm.conf
  [[ -f $dir/munge.key ]] || mungekey --create --keyfile "$dir/munge.key" >/dev/null
  chmod 600 "$dir/munge.key"
  munged --force --socket "$dir/munge.socket" --key-file "$dir/munge.key" \
    --pid-file "$dir/munged.pid" --log-file "$dir/munged.log" --seed-file "$dir/munge.seed"
  slurmctld -i
  wait_for 30 "slurmctld answering" scontrol ping
  slurmd -N "$node"
  wait_for 60 "node $node becoming idle" node_idle
  echo "export SLURM_CONF=$SLURM_CONF"
}

# whether a process runs (an exited one that its parent has not reaped yet does not)
running() { [[ -n $(ps -o stat= -p "$1" 2>/dev/null | grep -v Z) ]]; }

stop_daemon() { # pid file
  local pid
  [[ -f $1 ]] || return 0
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do running "$pid" || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

stop() {
  export SLURM_CONF=$dir/slurm.conf
  if [[ -f $dir/slurmctld.pid ]]; then
    scancel --full --quiet --partition local 2>/dev/null || true
    wait_for 30 "the queue emptying" queue_empty || true
  fi
  stop_daemon "$dir/slurmd.pid"
  stop_daemon "$dir/slurmctld.pid"
  stop_daemon "$dir/munged.pid"
}

case $action in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
