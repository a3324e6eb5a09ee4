#!/usr/bin/env bash
# The GPU checks afp runs when a session is lent a GPU machine, as one prepared script (a lent machine gives about
# 15 device-minutes in all: each step has its own time limit, so a hang costs one step, not the session).
#
#   OUT=/path/to/results bash bench/gpu_checks.sh            # from the repository root, on the GPU machine
#
# What it runs, in order of what matters (results with machine, date and command go to bench/RESULTS.md):
#   1. bench/align_engines.py  plain / FSDP / DeepSpeed ZeRO-2 (± CPU offload), LoRA and full: runs, reloads, resumes
#      (the DeepSpeed offload resume differed by 4.9e-4 on 2026-11-27; the resumed learning rate has been fixed since)
#   2. bench/align_throughput.py at a GPU-bound shape (batch 16): afp's step time against the plain LoRA step
#   3. the same at batch 4, the shape of the official reference (7.55 steps/s on one A800, full fine-tuning)
# DeepSpeed is not in the GPU image: carry wheels in .whl/ (see /work/.library/device/README.md; built here with
# `DS_BUILD_OPS=0 pip wheel --no-deps --no-build-isolation deepspeed` plus hjson, pydantic, pydantic-core,
# annotated-types, typing-inspection, typing-extensions) and they are installed first. With several GPUs, set
# PROCESSES=N to run the sharded engines on N processes.
set -u
out=${OUT:-runs/gpu-checks}
processes=${PROCESSES:-1}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, transformers, peft, accelerate; print(torch.__version__, transformers.__version__, peft.__version__, accelerate.__version__)"
    python3 -c "import deepspeed; print('deepspeed', deepspeed.__version__)" 2>&1 | tail -1
} > "$out/env.txt" 2>&1
cat "$out/env.txt"

timeout 330 python3 bench/align_engines.py --processes "$processes" --out /tmp/afp-engines 2>&1 | tee "$out/engines.txt"
for log in /tmp/afp-engines/*.log; do echo "=== $log"; tail -n 60 "$log"; done > "$out/engine_logs.txt" 2>&1

throughput="bench/align_throughput.py --preset xglm-564m --seq 512 --device cuda --warmup 5 --targets auto"
timeout 150 python3 $throughput --batch 16 --steps 20 --modes plain afp-cit afp 2>&1 | tee "$out/throughput_b16.txt"
timeout 120 python3 $throughput --batch 4 --steps 30 --modes plain afp 2>&1 | tee "$out/throughput_b4.txt"
