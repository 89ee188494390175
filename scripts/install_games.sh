#!/usr/bin/env bash
# Debian packages that `gameqa corpus capture` needs: a virtual screen, input scripting, an ffmpeg that records the
# screen (x11grab; the one inside imageio-ffmpeg cannot), and the games
# (configs/corpus/games.toml; with --candidates also those of configs/corpus/candidates.toml).
set -euo pipefail
games=(wesnoth-1.16 openttd openttd-opengfx pingus supertux)
if [ "${1:-}" = "--candidates" ]; then
    games+=(chromium-bsu warmux teeworlds teeworlds-server hedgewars freedoom prboom-plus)
fi
as_root=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "error: apt-get needs root: run this script as root or install sudo" >&2; exit 1; }
    as_root=(sudo)
fi
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb xdotool ffmpeg "${games[@]}"
