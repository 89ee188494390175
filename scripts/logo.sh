#!/usr/bin/env bash
# ERAQUE's leave-one-game-out bar (every game held out at SROCC >= 0.90) from nothing, in one resumable command:
#   1. the training cache: `gameqa corpus rebuild --plus` (capture, corpus, candidate games, soft and JPEG-blocked
#      training contents, merged into corpus-plus-sj);
#   2. one run per game held out, all with one recipe (soft + JPEG contents, 3 epochs);
#   3. the table and plot (`gameqa bench logo`), kept under $GAMEQA_CACHE/logo/.
# Interrupted anywhere, run it again: the rebuild skips what is built, each run resumes from its last checkpoint
# (same config), a finished run is only judged again. Needs the games (scripts/install_games.sh --candidates, root).
#   GAMEQA_CACHE=/work/cache bash scripts/logo.sh        # GAMES="pingus hedgewars" to run some games only
set -euo pipefail
cd "$(dirname "$0")/.."
GAMEQA=${GAMEQA:-.venv/bin/gameqa}
CACHE=${GAMEQA_CACHE:-$HOME/.cache/gameqa}
export GAMEQA_CACHE=$CACHE
# the runs go hardest first (the games nearest the bar in earlier runs), so a stopped chain has the telling ones
ALL_GAMES="pingus openttd chromium-bsu teeworlds warmux supertux hedgewars wesnoth"
GAMES=${GAMES:-$ALL_GAMES}
NAME=${NAME:-eraque-logo8sj}   # runs are $GAMEQA_CACHE/runs/$NAME-<game>
DATA=$CACHE/corpus-plus-sj

"$GAMEQA" corpus rebuild --plus --manifest "$CACHE/rebuild/corpus.csv"
for GAME in $GAMES; do
    echo "== $NAME-$GAME: $GAME held out"
    "$GAMEQA" train configs/eraque/default.toml "data.root=\"$DATA\"" 'data.groups=["game","soft"]' \
        "data.logo_game=\"$GAME\"" train.epochs=3 train.validate_every=1 "name=\"$NAME-$GAME\""
done
mkdir -p "$CACHE/logo"
RUNS=()
for GAME in $ALL_GAMES; do
    if [ -f "$CACHE/runs/$NAME-$GAME/best.pt" ]; then RUNS+=(--run "$GAME=$CACHE/runs/$NAME-$GAME"); fi
done
"$GAMEQA" bench logo "${RUNS[@]}" --manifest "$DATA/manifests/corpus.csv" --crop-mode texture \
    --json "$CACHE/logo/$NAME.json" --plot "$CACHE/logo/$NAME.png"
