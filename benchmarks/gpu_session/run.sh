#!/bin/bash
# Device session: unpack, install the carried keras wheels, run the jobs under a deadline, bring results back.
START=$(date +%s); C=runs/gpu_carry; RES=/tmp/res; mkdir -p $RES
LOG=$OUT/log.txt
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -m pip install --no-index --no-deps --target /tmp/kp $C/wheels/*.whl -q 2>&1 | tail -2
  export PYTHONPATH=/tmp/kp:$PWD KERAS_BACKEND=torch KERAS_TORCH_DEVICE=cpu SPKERAS_QUIET=1
  python3 $C/pack.py unpack $C/packed /tmp/shared && ls -la /tmp/shared/*
  echo "setup $(( $(date +%s) - START ))s"
  timeout $((${BUDGET:-500} - ($(date +%s) - START))) python3 $C/gpu_jobs.py /tmp/shared $RES $(( START + ${BUDGET:-500} - 15 ))
  echo "jobs rc=$? at $(( $(date +%s) - START ))s"
  if [ $(( $(date +%s) - START )) -lt $(( ${BUDGET:-500} - 5 )) ] && [ -n "$BENCH" ]; then
    timeout $(( ${BUDGET:-500} + 40 - ($(date +%s) - START) )) python3 benchmarks/simulate.py --device cuda --n 1000 --rounds 2 --vgg /tmp/shared/models/vgg16_cifar10.keras --data /tmp/shared/data/cifar10_test.npz --calib /tmp/shared/data/cifar10_train_10k.npz > $RES/bench_cuda.jsonl 2>&1
    cat $RES/bench_cuda.jsonl
  fi
} > $LOG 2>&1
tar czf $OUT/res.tgz -C /tmp res
echo "total $(( $(date +%s) - START ))s" >> $LOG
tail -c 6000 $LOG
