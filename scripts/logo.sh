#!/usr/bin/env bash
# ERAQUE's leave-one-game-out bar (every game held out at SROCC >= 0.90) from nothing, in one resumable command:
#   1. the training cache: `gameqa corpus rebuild --plus` (capture, corpus, candidate games, soft and JPEG-blocked
#      training contents, merged into corpus-plus-sj);
#   2. one run per game held out, all with one recipe (soft + JPEG contents, EPOCHS epochs, 3 by default), LANES
#      runs side by side;
#   3. the table and plot (`gameqa bench logo`) of each run's last step, kept under $GAMEQA_CACHE/logo/.
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
NAME=${NAME:-eraque-logo${NGAMES}sj$([ "$EPOCHS" = 3 ] || echo "e$EPOCHS")}   # runs are $GAMEQA_CACHE/runs/$NAME-<game>
DATA=$CACHE/corpus-plus-sj
# Runs side by side, each on its share of the cores: on a 2-core machine two 1-thread runs train about 16% more
# steps an hour than one 2-thread run (docs/models/eraque.md, "Training speed"). LANES=1: one run at a time.
CORES=$(nproc)
LANES=${LANES:-$(( CORES >= 2 ? 2 : 1 ))}
THREADS=${THREADS:-$(( CORES / LANES > 0 ? CORES / LANES : 1 ))}
LOGS=$CACHE/logo/logs
mkdir -p "$LOGS"

# A clip that fails is listed at the end of the rebuild (exit 1) and left out of the manifests: the runs go on
# without it once the training cache is there. Any other stop of the rebuild (a signal, no cache) ends the chain.
# Once the training cache is complete (its merged manifest is written last) it is not rebuilt again: a rebuild
# retries rejected captures, and a capture that succeeds then would change the clips under runs already started.
REBUILT=0
if [ -f "$DATA/manifests/corpus.csv" ] && [ -z "${REBUILD:-}" ]; then
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

# Runs already started (a last.pt kept by a stopped chain) go first, so a resumed chain finishes them before it
# starts new ones; a finished run passes through in a few minutes (train checks the frame cache, then says it is done).
STARTED=() FRESH=()
for GAME in $GAMES; do
    if [ -f "$CACHE/runs/$NAME-$GAME/last.pt" ]; then STARTED+=("$GAME"); else FRESH+=("$GAME"); fi
done
GAMES="${STARTED[*]} ${FRESH[*]}"
echo "== $(date +%H:%M) order: $GAMES (started runs first)"
CLAIMS=$(mktemp -d)   # a lane takes the next game not taken yet (mkdir is atomic)
trap 'rm -rf "$CLAIMS"' EXIT
lane() {
    local failed=0
    for GAME in $GAMES; do
        mkdir "$CLAIMS/$GAME" 2>/dev/null || continue
        echo "== $(date +%H:%M) lane $1: $NAME-$GAME ($GAME held out, $THREADS thread(s)), log $LOGS/$NAME-$GAME.log"
        if "$GAMEQA" train configs/eraque/default.toml "data.root=\"$DATA\"" 'data.groups=["game","soft"]' \
            "data.logo_game=\"$GAME\"" "train.epochs=$EPOCHS" train.validate_every=1 "train.threads=$THREADS" \
            "name=\"$NAME-$GAME\"" >> "$LOGS/$NAME-$GAME.log" 2>&1; then
            echo "== $(date +%H:%M) lane $1: $NAME-$GAME $(grep -a 'done:' "$LOGS/$NAME-$GAME.log" | tail -1)"
        else
            local rc=$?
            echo "== $(date +%H:%M) lane $1: $NAME-$GAME FAILED (rc $rc): $(tail -1 "$LOGS/$NAME-$GAME.log")"
            failed=1
        fi
    done
    return $failed
}
PIDS=()
for L in $(seq 1 "$LANES"); do
    lane "$L" &
    PIDS+=($!)
done
FAILED=0
for P in "${PIDS[@]}"; do wait "$P" || FAILED=1; done

RUNS=()
for GAME in $ALL_GAMES; do
    if [ -f "$CACHE/runs/$NAME-$GAME/best.pt" ]; then RUNS+=(--run "$GAME=$CACHE/runs/$NAME-$GAME"); fi
done
# The bar is read at each run's last step, the end of its cosine schedule, a rule fixed before the fifth recording's
# runs (docs/models/eraque.md, "The rule for the fifth recording"): the best validation step is picked on the other
# games and on the fourth recording it picked a first-epoch step for Chromium B.S.U. CHECKPOINT=best prints that
# table instead, for comparison.
CHECKPOINT=${CHECKPOINT:-last}
TABLE=$CACHE/logo/$NAME-$CHECKPOINT
"$GAMEQA" bench logo "${RUNS[@]}" --manifest "$DATA/manifests/corpus.csv" --crop-mode texture \
    --checkpoint "$CHECKPOINT" --json "$TABLE.json" --plot "$TABLE.png"
if [ "$FAILED" != 0 ]; then echo "some runs failed: see the FAILED lines above" >&2; exit 1; fi
