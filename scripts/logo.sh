#!/usr/bin/env bash
# ERAQUE's leave-one-game-out bar (every game held out at SROCC >= 0.90) from nothing, in one resumable command:
#   1. the training cache: `gameqa corpus rebuild --plus` (capture, corpus, candidate games, soft and JPEG-blocked
#      training contents, synthetic scroller scenes, merged into corpus-plus-sj);
#   2. one run per game held out, all with one recipe (soft + JPEG contents and the synthetic scenes: TRAIN_GROUPS;
#      EPOCHS epochs, 3 by default), LANES
#      runs side by side;
#      each run read on its held-out game as soon as it is trained; the probe games (PROBE, "pingus supertux") go
#      first, and if one of them reads under the bar the chain stops before the other games (exit 3);
#   3. the table and plot (`gameqa bench logo`) of each run's last step, kept under $GAMEQA_CACHE/logo/.
#   4. once every game has its reading, the quantiser head on the nine runs (`gameqa bench qp --cnn-runs`), kept
#      there too.
# Interrupted anywhere, run it again: the rebuild goes on where it stopped (a complete training cache is kept as
# it is: REBUILD=1 rebuilds it), each run resumes from its last checkpoint (same config; train.threads may
# differ), a finished run is only judged again. Needs the games
# (scripts/install_games.sh --candidates, root).
#   GAMEQA_CACHE=/work/cache bash scripts/logo.sh        # GAMES="pingus hedgewars" to run some games only
# Each run writes its log to $GAMEQA_CACHE/logo/logs/<run>.log; a failed run is named at the end (exit 1) and the
# other runs go on.
set -euo pipefail
cd "$(dirname "$0")/.."
GAMEQA=${GAMEQA:-.venv/bin/gameqa}
CACHE=${GAMEQA_CACHE:-$HOME/.cache/gameqa}
export GAMEQA_CACHE=$CACHE
# the runs go hardest first (the games nearest the bar in earlier runs), so a stopped chain has the telling ones
# Freedoom joined in session 37 (the ninth game, the only first-person 3D view): runs named logo9.
ALL_GAMES="pingus supertux openttd chromium-bsu teeworlds warmux hedgewars wesnoth freedoom"
GAMES=${GAMES:-$ALL_GAMES}
EPOCHS=${EPOCHS:-3}
NGAMES=$(echo $ALL_GAMES | wc -w)
# The manifest groups the runs train on: the games, their soft and JPEG-blocked copies and, since the seventh
# recording's rule (docs/models/eraque.md), the synthetic scroller scenes. TRAIN_GROUPS="game soft": the sixth's recipe.
TRAIN_GROUPS=${TRAIN_GROUPS:-game soft synth}
GROUPS_TOML="[$(printf '"%s",' $TRAIN_GROUPS | sed 's/,$//')]"
TAG=""
if [[ " $TRAIN_GROUPS " == *" soft "* ]]; then TAG+=sj; fi
if [[ " $TRAIN_GROUPS " == *" synth "* ]]; then TAG+=syn; fi
NAME=${NAME:-eraque-logo${NGAMES}${TAG}$([ "$EPOCHS" = 3 ] || echo "e$EPOCHS")}   # runs are $GAMEQA_CACHE/runs/$NAME-<game>
DATA=$CACHE/corpus-plus-sj
PY=${PY:-.venv/bin/python}
# Runs side by side, each on its share of the cores: on a 2-core machine two 1-thread runs train about 16% more
# steps an hour than one 2-thread run (docs/models/eraque.md, "Training speed"). LANES=1: one run at a time.
CORES=$(nproc)
LANES=${LANES:-$(( CORES >= 2 ? 2 : 1 ))}
THREADS=${THREADS:-$(( CORES / LANES > 0 ? CORES / LANES : 1 ))}
LOGS=$CACHE/logo/logs
mkdir -p "$LOGS"

# A clip that fails is listed at the end of the rebuild (exit 1) and left out of the manifests: the runs go on
# without it once the training cache is there. Any other stop of the rebuild (a signal, no cache) ends the chain.
# Once the training cache is complete (its merged manifest is written last, with every group the runs need) it is
# not rebuilt again: a rebuild retries rejected captures, and a capture that succeeds then would change the clips
# under runs already started. A cache built before the synthetic scenes lacks the group synth: rebuilt to add them.
has_groups() {
    "$PY" - "$DATA/manifests/corpus.csv" $TRAIN_GROUPS <<'PY'
import csv, sys
have = {r["group"] for r in csv.DictReader(open(sys.argv[1]))}
sys.exit(0 if set(sys.argv[2:]) <= have else 1)
PY
}
REBUILT=0
if [ -f "$DATA/manifests/corpus.csv" ] && [ -z "${REBUILD:-}" ] && has_groups; then
    echo "== $(date +%H:%M) training cache in place: $DATA (not rebuilt, so every run trains on the same clips;"\
         "REBUILD=1 rebuilds it first)"
else
    "$GAMEQA" corpus rebuild --plus --manifest "$CACHE/rebuild/corpus.csv" || REBUILT=$?
fi
if [ "$REBUILT" != 0 ]; then
    if [ "$REBUILT" != 1 ] || [ ! -f "$DATA/manifests/corpus.csv" ]; then
        echo "the rebuild stopped (rc $REBUILT); no training cache to go on with, or a signal" >&2
        exit "$REBUILT"
    fi
    echo "== $(date +%H:%M) the rebuild listed failed clips (above); the runs train on the clips that were built"
fi

# The bar is read at each run's last step, the end of its cosine schedule, a rule fixed before the fifth recording's
# runs (docs/models/eraque.md, "The rule for the fifth recording"): the best validation step is picked on the other
# games and on the fourth recording it picked a first-epoch step for Chromium B.S.U. CHECKPOINT=best prints that
# table instead, for comparison.
CHECKPOINT=${CHECKPOINT:-last}
MANIFEST=$DATA/manifests/corpus.csv
# The probe: these games (the two nearest the bar in every earlier table) are trained and read first, and if one of
# them reads under the bar the chain stops there, since the table cannot meet it (the rule of the sixth recording,
# docs/models/eraque.md). PROBE= (empty) trains every game without stopping.
PROBE=${PROBE-pingus supertux}

# A lane trains a run, then reads it at once on every clip of its held-out game (on the lane's threads, while the
# other lane trains; the predictions are kept beside the run, so the table at the end reads them again in seconds)
# and writes that game's line to $CACHE/logo/$NAME-<game>-$CHECKPOINT.json.
bench_logo() {  # one reading for the lanes and the table, so the table finds the lanes' kept predictions
    "$GAMEQA" bench logo "$@" --manifest "$MANIFEST" --crop-mode texture --checkpoint "$CHECKPOINT"
}
judge() {
    OMP_NUM_THREADS=$THREADS bench_logo --run "$1=$CACHE/runs/$NAME-$1" --json "$CACHE/logo/$NAME-$1-$CHECKPOINT.json"
}
verdict() {  # verdict GAME: prints the held-out game's SROCC and whether it reaches the bar; fails if it does not
    "$PY" - "$CACHE/logo/$NAME-$1-$CHECKPOINT.json" "$1" <<'PY'
import json, sys
try:
    e = json.load(open(sys.argv[1]))["games"][sys.argv[2]]
    srocc, (low, high) = e["srocc"], e["runs"][0]["srocc_ci"]
except (OSError, ValueError, KeyError, IndexError) as err:
    sys.exit(f"no reading ({sys.argv[1]}: {err!r})")
print(f"SROCC {srocc:.3f} [{low:.3f}, {high:.3f}] on {e['clips']} clips, {'at or over' if e['passes'] else 'under'} the bar")
sys.exit(0 if e["passes"] else 1)
PY
}
lane() {   # lane NUMBER CLAIMS_DIR GAMES...: takes the next game no other lane has taken (mkdir is atomic)
    local n=$1 claims=$2 failed=0
    shift 2
    for GAME in "$@"; do
        mkdir "$claims/$GAME" 2>/dev/null || continue
        echo "== $(date +%H:%M) lane $n: $NAME-$GAME ($GAME held out, $THREADS thread(s)), log $LOGS/$NAME-$GAME.log"
        if "$GAMEQA" train configs/eraque/default.toml "data.root=\"$DATA\"" "data.groups=$GROUPS_TOML" \
            "data.logo_game=\"$GAME\"" "train.epochs=$EPOCHS" train.validate_every=1 "train.threads=$THREADS" \
            "name=\"$NAME-$GAME\"" >> "$LOGS/$NAME-$GAME.log" 2>&1; then
            echo "== $(date +%H:%M) lane $n: $NAME-$GAME $(grep -a 'done:' "$LOGS/$NAME-$GAME.log" | tail -1)"
            if judge "$GAME" >> "$LOGS/$NAME-$GAME.log" 2>&1; then
                echo "== $(date +%H:%M) lane $n: $GAME held out: $(verdict "$GAME")"
            else
                echo "== $(date +%H:%M) lane $n: reading $NAME-$GAME FAILED: $(tail -1 "$LOGS/$NAME-$GAME.log")"
                failed=1
            fi
        else
            local rc=$?
            echo "== $(date +%H:%M) lane $n: $NAME-$GAME FAILED (rc $rc): $(tail -1 "$LOGS/$NAME-$GAME.log")"
            failed=1
        fi
    done
    return $failed
}
lanes() {  # lanes GAMES...: LANES lanes over these games; runs already started (a last.pt kept by a stopped chain)
    local started=() fresh=() claims pids=() failed=0   # go first, so a resumed chain finishes them before new ones
    for GAME in "$@"; do
        if [ -f "$CACHE/runs/$NAME-$GAME/last.pt" ]; then started+=("$GAME"); else fresh+=("$GAME"); fi
    done
    echo "== $(date +%H:%M) order: $(echo ${started[*]} ${fresh[*]}) (started runs first)"
    claims=$(mktemp -d)
    for L in $(seq 1 "$LANES"); do
        lane "$L" "$claims" "${started[@]}" "${fresh[@]}" &
        pids+=($!)
    done
    for P in "${pids[@]}"; do wait "$P" || failed=1; done
    rm -rf "$claims"
    return $failed
}
table() {  # the table of every finished run
    local runs=()
    for GAME in $ALL_GAMES; do
        if [ -f "$CACHE/runs/$NAME-$GAME/best.pt" ]; then runs+=(--run "$GAME=$CACHE/runs/$NAME-$GAME"); fi
    done
    if [ ${#runs[@]} -eq 0 ]; then echo "== $(date +%H:%M) no finished run of $NAME to tabulate"; return 0; fi
    local table=$CACHE/logo/$NAME-$CHECKPOINT
    bench_logo "${runs[@]}" --json "$table.json" --plot "$table.png"
}

head_table() {  # with every game read held out: the quantiser head on these runs (gameqa bench qp --cnn-runs)
    for GAME in $ALL_GAMES; do
        if [ ! -f "$CACHE/logo/$NAME-$GAME-$CHECKPOINT.json" ]; then
            echo "== $(date +%H:%M) the quantiser head waits for every game's run ($GAME has no reading yet)"
            return 0
        fi
    done
    local table=$CACHE/logo/$NAME-quantiser-head-$CHECKPOINT
    echo "== $(date +%H:%M) the quantiser head on the nine runs (table and plot: $table.*)"
    "$GAMEQA" bench qp --manifest "$MANIFEST" --cnn-runs "$CACHE/runs/$NAME-*" --crop-mode texture \
        --checkpoint "$CHECKPOINT" --json "$table.json" --plot "$table.png"
}

FIRST=() REST=()   # (a finished run passes through in a few minutes: train checks the frame cache, says it is done)
for GAME in $GAMES; do
    if [[ " $PROBE " == *" $GAME "* ]]; then FIRST+=("$GAME"); else REST+=("$GAME"); fi
done
FAILED=0
if [ ${#FIRST[@]} -gt 0 ]; then
    echo "== $(date +%H:%M) the probe first: ${FIRST[*]}"
    lanes "${FIRST[@]}" || FAILED=1
    BELOW=()
    for GAME in "${FIRST[@]}"; do
        if ! verdict "$GAME" > /dev/null 2>&1; then BELOW+=("$GAME"); fi
    done
    if [ ${#BELOW[@]} -gt 0 ]; then
        table
        if [ ${#REST[@]} -gt 0 ]; then NOT="${REST[*]} not started (PROBE= runs them anyway)"; else NOT="no other game was asked for"; fi
        echo "== $(date +%H:%M) the probe: ${BELOW[*]} not read at or over the bar (above, or a failed run):" \
             "the chain stops here, as the rule says; $NOT" >&2
        exit 3
    fi
    echo "== $(date +%H:%M) the probe passes: ${FIRST[*]} at or over the bar; the other games follow"
fi
[ ${#REST[@]} -eq 0 ] || lanes "${REST[@]}" || FAILED=1
table
head_table
if [ "$FAILED" != 0 ]; then echo "some runs failed: see the FAILED lines above" >&2; exit 1; fi
