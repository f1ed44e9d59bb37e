#!/usr/bin/env bash
# The main job end to end on generated data: synth -> train -> export (FP32/FP16/INT8) -> infer -> eval parity.
# Sizes are picked for 2 CPU cores; override with env vars (DEMO_IMAGES, DEMO_EPOCHS, DEMO_INPUT, DEMO_ARCH).
set -euo pipefail
DIR=${DEMO_DIR:-demo}
IMAGES=${DEMO_IMAGES:-1000}
CLASSES=${DEMO_CLASSES:-6}
EPOCHS=${DEMO_EPOCHS:-10}
INPUT=${DEMO_INPUT:-64}
ARCH=${DEMO_ARCH:-resnet18}
mkdir -p "$DIR"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1/6 generate a synthetic VOC-layout dataset ($IMAGES images, $CLASSES classes)"
der-data synth "$DIR/data" --classes "$CLASSES" --images "$IMAGES" --seed 0 --size 96 --overwrite
der-data info "$DIR/data" --split test

step "2/6 train DER ($ARCH at ${INPUT}px, $EPOCHS epochs)"
der-train "$DIR/data" --arch "$ARCH" --input-size "$INPUT" --epochs "$EPOCHS" --batch-size 16 \
  --lr 0.01 --lr-step 8 --workers 2 -o "$DIR/der.pt"

step "3/6 export ONNX FP32 + FP16 + INT8 (verified against PyTorch)"
der-export "$DIR/der.pt" -o "$DIR/der.onnx" --fp16 --int8 --calib "$DIR/data/JPEGImages" --calib-max 64 --cadm

step "4/6 infer on the test images (jsonl) and draw CADM heat maps for a few"
der-infer --engine "$DIR/der.onnx" "$DIR/data/JPEGImages" --format jsonl -o "$DIR/predictions.jsonl"
head -n 3 "$DIR/predictions.jsonl"
images=("$DIR"/data/JPEGImages/*.jpg)
mkdir -p "$DIR/cam-input" && cp "${images[@]:0:3}" "$DIR/cam-input/"
der-infer --engine "$DIR/der.onnx" "$DIR/cam-input" --cam "$DIR/cam"

step "5/6 evaluate each ONNX variant against the PyTorch checkpoint (parity gate)"
for variant in der.onnx der.fp16.onnx der.int8.onnx; do
  der-eval --engine "$DIR/$variant" "$DIR/data" --split test --reference "$DIR/der.pt"
done

step "6/6 environment"
der-doctor
echo
echo "demo artifacts in $DIR/"
