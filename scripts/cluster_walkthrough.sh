#!/usr/bin/env bash
# Runs every command of docs/cluster.md ("From one CPU to a cluster") on this machine and writes
# what each printed into docs/cluster/*.txt, which the page includes. Needs root (it starts a
# one-node Slurm cluster with scripts/slurm_cluster.sh, installing slurm-wlm if missing) and
# takes about five minutes.
#
#   sudo make cluster-docs      (or: bash scripts/cluster_walkthrough.sh .venv/bin/python)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${1:-$repo/.venv/bin/python}
[[ $python == /* ]] || python=$PWD/$python  # absolute, but not resolved: the venv's own
out=$repo/docs/cluster
work=$(mktemp -d /tmp/lpwalk.XXXX)
cluster=$work/slurm
mkdir -p "$out"
cd "$work"
export PYTHONUNBUFFERED=1

cleanup() { bash "$repo/scripts/slurm_cluster.sh" stop "$cluster" >/dev/null 2>&1 || true; }
trap cleanup EXIT

# Keep a command's own lines: no warnings, paths relative to the working folder.
tidy() {
  grep -v -E "Warning|warn\(|^\s*$|LeafSpec|IPv6" \
    | sed -e "s#$cluster#/tmp/slurm#g" -e "s#$work/##g" -e "s#$repo/##g"
}
train() { "$python" "$repo/scripts/train.py" "$@"; }
# The lines a training run ends with: its folder, processes and final metrics.
summary() { sed -n '/^TensorBoard run/,$p'; }
small=(trainer.max_epochs=2 trainer.enable_progress_bar=false test=false)

echo "one CPU"
train "${small[@]}" 2>&1 | tidy | summary >"$out/one_cpu.txt"

echo "two CPU processes"
train trainer=ddp_sim "${small[@]}" 2>&1 | tidy | summary >"$out/ddp_sim.txt"

echo "two torchrun nodes"
torchrun=$(dirname "$python")/torchrun
mkdir torchrun && cd torchrun
for rank in 0 1; do
  "$torchrun" --nnodes 2 --node_rank $rank --nproc_per_node 1 --master_addr 127.0.0.1 \
    --master_port 29533 "$repo/scripts/train.py" trainer=ddp_multinode trainer.accelerator=cpu \
    trainer.devices=1 "${small[@]}" >"$work/node$rank.txt" 2>&1 &
  sleep 1.5
done
wait
tidy <"$work/node0.txt" | summary >"$out/torchrun_node0.txt"
{ grep -E "GLOBAL_RANK" "$work/node1.txt"; echo "\$ ls -A . logs/runs/*"; ls -A . logs/runs/*; } \
  | tidy >"$out/torchrun_node1.txt"
cd "$work"

echo "a Slurm cluster"
bash "$repo/scripts/slurm_cluster.sh" start "$cluster" | tidy >"$out/slurm_start.txt"
export SLURM_CONF=$cluster/slurm.conf
sinfo >>"$out/slurm_start.txt"

echo "an sbatch script"
cat >"$out/train.sbatch" <<EOF
#!/bin/bash
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=2
#SBATCH --output=train-%j.out
#SBATCH --open-mode=append
srun python scripts/train.py trainer=ddp trainer.accelerator=cpu trainer.devices=2 \\
    ${small[*]} \\
    'hydra.run.dir=logs/slurm/\${oc.env:SLURM_JOB_ID}'
EOF
sed "s#srun python scripts/train.py#srun $python $repo/scripts/train.py#" "$out/train.sbatch" \
  >"$work/train.sbatch"
job=$(sbatch --parsable --wait "$work/train.sbatch")
{ echo "Submitted batch job $job"; tidy <"train-$job.out" | summary; } >"$out/sbatch.txt"

echo "a sweep of Slurm jobs"
train -m hydra/launcher=slurm trainer=ddp trainer.accelerator=cpu trainer.devices=2 \
  "${small[@]}" optimizer.lr=0.003,0.01 hydra.sweep.dir=multirun 2>&1 \
  | grep -E "HYDRA\]" | grep -v sacct | tidy >"$out/sweep.txt"
{ echo "\$ ls -A multirun multirun/0"; ls -A multirun; ls -A multirun/0; } >"$out/sweep_folders.txt"

echo "a job requeued mid-epoch"
# each step slowed down (tests/helpers/slow_steps.py), so that the signal comes mid-epoch
PYTHONPATH=$repo/tests/helpers train -m hydra/launcher=slurm trainer=ddp trainer.accelerator=cpu \
  trainer.devices=2 trainer.max_epochs=4 trainer.enable_progress_bar=false test=false \
  +callbacks.slow._target_=slow_steps.SlowSteps +callbacks.slow.seconds=0.3 \
  hydra.sweep.dir=requeue >/dev/null 2>&1 &
sweep_pid=$!
# the TensorBoard file appears as training starts; an epoch takes about 3 s
until compgen -G "requeue/0/tensorboard/version_0/events.*" >/dev/null; do sleep 0.2; done
sleep 5
job=$(ls requeue/.submitit | grep -E '^[0-9]+$')
scancel --signal=USR1 "$job"
wait $sweep_pid
grep -h -E "auto-requeue signal|Requeued SLURM job|Restoring states|Restored all states" \
  requeue/.submitit/"$job"/*_0_log.out | tidy >"$out/requeue.txt"
# the sweep returns once the job's result is written, a moment before the job has ended
until scontrol show job "$job" | grep -q -E "JobState=(COMPLETED|FAILED|CANCELLED)"; do
  sleep 0.5
done
scontrol show job "$job" | grep -o -E "JobState=[A-Z]+|Restarts=[0-9]+" | tr '\n' ' ' \
  >>"$out/requeue.txt"
echo >>"$out/requeue.txt"

echo "a task count that does not match"
set +e
srun --nodes=1 --ntasks=1 "$python" "$repo/scripts/train.py" trainer=ddp trainer.accelerator=cpu \
  trainer.devices=2 "${small[@]}" 2>&1 | grep -E "^Error|srun: error" | tidy >"$out/mismatch.txt"
set -e
echo "written: $out"
