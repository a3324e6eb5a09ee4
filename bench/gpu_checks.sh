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
#   4. issue #24: afp's speed switches (train.compile, data.packing) against the plain LoRA step, at batch 16 and 4,
#      max_length 512, on the demo file's real lengths with SmolLM2-135M's config (random weights: packing needs a
#      LLaMA-like architecture, XGLM mixes packed texts), and compile alone on xglm-564M's config
# CHECKS="engines throughput speed" (the default: all) picks the steps to run, e.g. CHECKS=speed for issue #24 only.
# DeepSpeed is not in the GPU image: carry wheels in .whl/ (see /work/.library/device/README.md; built here with
# `DS_BUILD_OPS=0 pip wheel --no-deps --no-build-isolation deepspeed` plus hjson, pydantic, pydantic-core,
# annotated-types, typing-inspection, typing-extensions) and they are installed first. With several GPUs, set
# PROCESSES=N to run the sharded engines on N processes.
set -u
out=${OUT:-runs/gpu-checks}
checks=" ${CHECKS:-engines throughput speed} "
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

if [[ $checks == *" engines "* ]]; then
    timeout 330 python3 bench/align_engines.py --processes "$processes" --out /tmp/afp-engines 2>&1 | tee "$out/engines.txt"
    for log in /tmp/afp-engines/*.log; do echo "=== $log"; tail -n 60 "$log"; done > "$out/engine_logs.txt" 2>&1
fi

throughput="bench/align_throughput.py --preset xglm-564m --seq 512 --device cuda --warmup 5 --targets auto"
if [[ $checks == *" throughput "* ]]; then
    timeout 150 python3 $throughput --batch 16 --steps 20 --modes plain afp-cit afp 2>&1 | tee "$out/throughput_b16.txt"
    timeout 120 python3 $throughput --batch 4 --steps 30 --modes plain afp 2>&1 | tee "$out/throughput_b4.txt"
fi

if [[ $checks == *" speed "* ]]; then  # each compiled mode compiles in its warm-up (the first step)
    speed="bench/align_throughput.py --preset smollm2-135m --data afp_cli/demo/tatoeba_en-zh.afp.jsonl --seq 512 --device cuda --warmup 5 --targets auto"
    timeout 300 python3 $speed --batch 16 --steps 20 --modes plain afp afp+packing afp+compile afp+compile+packing 2>&1 | tee "$out/speed_b16.txt"
    timeout 150 python3 $speed --batch 4 --steps 30 --modes plain afp afp+compile+packing 2>&1 | tee "$out/speed_b4.txt"
    timeout 150 python3 $throughput --batch 16 --steps 20 --modes plain afp afp+compile 2>&1 | tee "$out/speed_xglm_b16.txt"
fi
