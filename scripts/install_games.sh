#!/usr/bin/env bash
# Debian packages that `gameqa corpus capture` needs: a virtual screen, input scripting, and the games
# (configs/corpus/games.toml; with --candidates also those of configs/corpus/candidates.toml).
set -euo pipefail
games=(wesnoth-1.16 openttd openttd-opengfx pingus supertux)
if [ "${1:-}" = "--candidates" ]; then
    games+=(chromium-bsu warmux teeworlds teeworlds-server hedgewars)
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb xdotool "${games[@]}"
