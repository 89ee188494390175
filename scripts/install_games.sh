#!/usr/bin/env bash
# Debian packages that `gameqa corpus capture` needs: a virtual screen, input scripting, and the games.
set -euo pipefail
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb xdotool wesnoth-1.16 openttd openttd-opengfx pingus supertux
