#!/usr/bin/env bash
# A quantiser head for the bundled eraque, fitted and checked from nothing, in one resumable command:
#   1. the corpus (`gameqa corpus rebuild --root $GAMEQA_CACHE/corpus`: a new recording, which eraque never saw);
#   2. one head per H.264 reader (macroblock, slice) on eraque's pixel scores of the train + val clips
#      (`gameqa bench qp --cnn-model eraque --h264-qp R --save-head`: the test split's SROCCs, head beside CNN alone),
#      each put beside eraque in a model folder;
#   3. the off-ladder set of its test sources (`gameqa corpus offgrid`: CRF encodes, other presets, sizes, GOPs);
#   4. eraque alone and with each head, read on the off-ladder set, then on the test split (`gameqa eval --by codec`).
# The cheap, deciding readings come first: a head that fails on the test split needs no off-ladder set.
# Everything lands in $GAMEQA_CACHE/qp-head/ (heads, model folders, logs, eval tables). Interrupted anywhere, run it
# again: the rebuild and the off-ladder set go on where they stopped, eraque's clip scores are kept in the corpus
# (cnn-scores.json) and the QP readings too (qp-levels.json). Needs the games (scripts/install_games.sh, root).
#   GAMEQA_CACHE=/work/cache bash scripts/qp_head_check.sh
# About 1 h 50 min for the corpus, then about an hour more on a 2-core CPU.
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
say() { echo "== $(date +%H:%M) $*"; }

if [ ! -f "$MANIFEST" ] || [ "${REBUILD:-0}" = 1 ]; then
    say "corpus"
    "$GAMEQA" corpus rebuild --root "$CORPUS"
fi
for reader in macroblock slice; do
    say "head, H.264 by $reader"
    "$GAMEQA" bench qp --manifest "$MANIFEST" --cnn-model eraque --h264-qp "$reader" \
        --save-head "$OUT/qp_head-$reader.json" --json "$OUT/qp-$reader.json" | tee "$OUT/qp-$reader.txt"
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
say "off-ladder set"
"$GAMEQA" corpus offgrid --manifest "$MANIFEST" --out "$OFFGRID" 2>&1 | tail -5 || say "off-ladder clips failed (named above); going on with the others"
# Off the ladder first (check 2 has no other reading); the test split's SROCCs are in qp-*.txt already.
for manifest in "$OFFGRID/manifests/corpus.csv" "$MANIFEST"; do
    for model in eraque "$OUT/eraque-qp-slice" "$OUT/eraque-qp-macroblock"; do
        tag=$(basename "$model")-$(basename "$(dirname "$(dirname "$manifest")")")
        say "eval $tag"
        "$GAMEQA" eval --model "$model" --manifest "$manifest" --split test --by codec --by group > "$OUT/eval-$tag.txt"
        head -12 "$OUT/eval-$tag.txt"
    done
done
say "done: $OUT"
