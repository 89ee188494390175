#!/usr/bin/env bash
# A quantiser head for the bundled eraque, fitted and checked from nothing, in one resumable command:
#   1. the corpus (`gameqa corpus rebuild --root $GAMEQA_CACHE/corpus`: a new recording, which eraque never saw);
#   2. one head per H.264 reader (macroblock, slice) on eraque's pixel scores of the train + val clips
#      (`gameqa bench qp --cnn-model eraque --h264-qp R --save-head`: the test split's SROCCs, head beside CNN alone),
#      each put beside eraque in a model folder; beside them (2 cores: neither keeps both busy alone)
#   3. the off-ladder set of its test sources (`gameqa corpus offgrid`: CRF encodes, other presets, sizes, GOPs);
#   4. eraque alone and with the slice head on the off-ladder set (the reading that decides the rule's check 2), then
#      the macroblock head there beside the student's head (`bench qp --cnn-model eraque-student --h264-qp slice`),
#      then the three on the test split (`gameqa eval --by codec --by group`).
# Everything lands in $GAMEQA_CACHE/qp-head/ (heads, model folders, readings, eval tables; `== time step` lines on
# stdout). Interrupted anywhere, run it again: the rebuild and the off-ladder set go on where they stopped, the
# models' clip scores are kept in the corpus (cnn-scores.json) and the QP readings too (qp-levels.json).
# Needs the games (scripts/install_games.sh, root). Nothing else should load the CPU during the capture: a busy CPU
# makes the games drop frames, and the capture rejects those segments.
#   GAMEQA_CACHE=/work/cache bash scripts/qp_head_check.sh
# About 1 h 50 min for the corpus, then about 40 min more on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
GAMEQA=${GAMEQA:-.venv/bin/gameqa}
CACHE=${GAMEQA_CACHE:-$HOME/.cache/gameqa}
export GAMEQA_CACHE=$CACHE
CORPUS=$CACHE/corpus
MANIFEST=$CORPUS/manifests/corpus.csv
OFFGRID=$CACHE/offgrid
OUT=$CACHE/qp-head
mkdir -p "$OUT"
say() { echo "== $(date +%H:%M:%S) $*"; }

if [ ! -f "$MANIFEST" ] || [ "${REBUILD:-0}" = 1 ]; then
    say "corpus"
    "$GAMEQA" corpus rebuild --root "$CORPUS"
fi

heads() {  # both heads, one after the other (the second reuses the first's clip scores)
    for reader in macroblock slice; do
        "$GAMEQA" bench qp --manifest "$MANIFEST" --cnn-model eraque --h264-qp "$reader" \
            --save-head "$OUT/qp_head-$reader.json" --json "$OUT/qp-$reader.json" > "$OUT/qp-$reader.txt"
        say "head, H.264 by $reader: $OUT/qp-$reader.txt"
    done
}
say "heads (bench qp) beside the off-ladder set"
heads &
pid=$!
"$GAMEQA" corpus offgrid --manifest "$MANIFEST" --out "$OFFGRID" > "$OUT/offgrid.txt" 2>&1 \
    || say "off-ladder clips failed (named in $OUT/offgrid.txt); going on with the others"
wait "$pid"
for reader in macroblock slice; do
    folder=$OUT/eraque-qp-$reader
    rm -rf "$folder"
    cp -r "$(.venv/bin/python -c 'from gameqa.models.registry import get_card; print(get_card("eraque").weights.parent)')" "$folder"
    cp "$OUT/qp_head-$reader.json" "$folder/qp_head.json"
    FOLDER=$folder READER=$reader .venv/bin/python - <<'PY'
import json, os
path = os.path.join(os.environ["FOLDER"], "model.json")
spec = json.load(open(path))
spec.update(name=f"eraque-qp-{os.environ['READER']}", bitstream_head="qp_head.json", version=spec["version"] + "+qp")
json.dump(spec, open(path, "w"), indent=2)
PY
done
evaluate() {  # model, manifest, tag
    "$GAMEQA" eval --model "$1" --manifest "$2" --split test --by codec --by group > "$OUT/eval-$3.txt"
    say "eval $3: $OUT/eval-$3.txt"
}
OFF=$OFFGRID/manifests/corpus.csv
# `wait PID`, not a bare `wait` (which returns 0 whatever the job did): a failed reading stops the script (set -e)
evaluate eraque "$OFF" eraque-offgrid &
pid=$!
evaluate "$OUT/eraque-qp-slice" "$OFF" eraque-qp-slice-offgrid
wait "$pid"
evaluate "$OUT/eraque-qp-macroblock" "$OFF" eraque-qp-macroblock-offgrid &
pid=$!
"$GAMEQA" bench qp --manifest "$MANIFEST" --cnn-model eraque-student --h264-qp slice \
    --save-head "$OUT/student_qp_head-slice.json" --json "$OUT/student-qp-slice.json" > "$OUT/student-qp-slice.txt"
say "student head, H.264 by slice: $OUT/student-qp-slice.txt"
wait "$pid"
evaluate eraque "$MANIFEST" eraque-corpus &
pid=$!
evaluate "$OUT/eraque-qp-slice" "$MANIFEST" eraque-qp-slice-corpus
wait "$pid"
evaluate "$OUT/eraque-qp-macroblock" "$MANIFEST" eraque-qp-macroblock-corpus
say "done: $OUT"
