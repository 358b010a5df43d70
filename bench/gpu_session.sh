#!/usr/bin/env bash
# A prepared GPU session (see docs/benchmarks.md): run from the repository root on a CUDA machine.
#   bash bench/gpu_session.sh checks            CUDA path vs CPU on digits, extraction and MASC benchmarks
#   bash bench/gpu_session.sh reproduce SECONDS the paper's full MLP/MNIST recipe at p = 0.6, time-boxed
# Needs python3 with torch (CUDA), typer, rich, pyyaml, safetensors, scikit-learn, scipy, matplotlib,
# psutil; MNIST's IDX files under $NOISEFIX_DATA/mnist for `reproduce`. Results go to $OUT (default gpu-out):
# logs, markdown tables and one results.tgz (no weights, no images).
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
WORK=${WORK:-/tmp/noisefix-gpu}
mkdir -p "$WORK"
DEVICE=${DEVICE:-cuda}          # DEVICE=cpu MASC_N=3000 EXTRACT_N=1024: a dry run of `checks` without a GPU
MASC_N=${MASC_N:-60000}
EXTRACT_N=${EXTRACT_N:-16384}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nf() { python3 -c "from noisefix.cli import main; main()" "$@"; }

checks() {
    { nvidia-smi; python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"; } \
        > "$OUT/env.txt" 2>&1
    # 1. the CUDA path against the CPU path: one run (trained on the GPU), probed on each device
    nf data export digits "$WORK/digits" --corrupt 0.4 --force
    nf train "$WORK/digits" --labels "$WORK/digits/noisy_labels.csv" --out "$WORK/run" --device "$DEVICE" \
        --epochs 40 --force
    cp -r "$WORK/run" "$WORK/run_cpu"
    /usr/bin/time -f "probe $DEVICE %e s" python3 -c "from noisefix.cli import main; main()" probe "$WORK/digits" \
        --run "$WORK/run" --device "$DEVICE" --force
    /usr/bin/time -f "probe cpu %e s" python3 -c "from noisefix.cli import main; main()" probe "$WORK/digits" \
        --run "$WORK/run_cpu" --device cpu --force
    python3 - "$WORK/run/probe/scores.csv" "$WORK/run_cpu/probe/scores.csv" <<'EOF' | tee "$OUT/cuda_vs_cpu.md"
import csv, sys
a, b = ([r for r in csv.DictReader(open(p))] for p in sys.argv[1:3])
worst = {}
print("| checkpoint | layer | probe | test acc cuda | test acc cpu | agreement cuda | agreement cpu |")
print("|---|---|---|---|---|---|---|")
for x, y in zip(a, b):
    assert (x["checkpoint"], x["layer"], x["probe"]) == (y["checkpoint"], y["layer"], y["probe"])
    for k in ("test_acc", "agreement"):
        worst[k] = max(worst.get(k, 0), abs(float(x[k]) - float(y[k])))
    print(f"| {x['checkpoint']} | {x['layer']} | {x['probe']} | {x['test_acc']} | {y['test_acc']} | "
          f"{x['agreement']} | {y['agreement']} |")
print(f"\nlargest |cuda - cpu|: {worst}; picks cuda/cpu: "
      f"{[r['layer'] + '/' + r['probe'] for r in a if r['pick']]} / {[r['layer'] + '/' + r['probe'] for r in b if r['pick']]}")
EOF
    # 2. extraction throughput, fp32 and bf16 forward, against the bare forward pass
    python3 bench/bench_extract.py --models mlp,cnn --n "$EXTRACT_N" --batch 256 --dtypes fp32,bf16 \
        --device "$DEVICE" --out "$OUT/bench.md"
    python3 bench/bench_extract.py --models resnet18 --folds 1 --n "$EXTRACT_N" --batch 256 --dtypes fp32,bf16 \
        --device "$DEVICE" --out "$OUT/bench.md"
    # 3. MASC fit + predict on the GPU against the paper's numpy pipeline (on this machine's CPUs)
    python3 bench/bench_masc.py --device "$DEVICE" --n "$MASC_N" --dims 512,2048,4096 --large-d 8192 \
        --out "$OUT/bench.md"
}

reproduce() {
    local seconds=$1
    timeout --signal=INT "$seconds" python3 -c "from noisefix.cli import main; main()" reproduce \
        recipes/mlp_mnist.yaml --corruption 0.6 --out "$WORK/repro"
    echo "reproduce exit: $?"
    (cd "$WORK" && tar czf - --exclude='*.safetensors' --exclude='repro/data' --exclude='checkpoints' repro) \
        > "$OUT/results.tgz"
}

case "${1:-}" in
    checks) checks 2>&1 | tee "$OUT/checks.log" ;;
    reproduce) reproduce "${2:-480}" 2>&1 | tee "$OUT/reproduce.log" ;;
    *) echo "usage: bash bench/gpu_session.sh checks | reproduce SECONDS" >&2; exit 2 ;;
esac
