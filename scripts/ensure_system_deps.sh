#!/usr/bin/env bash
# Make sure the Debian packages the service needs are present: libopus0 (Opus
# codec used through opuslib) and a Python >= 3.11 with venv; with WITH_REDIS=1
# also redis-server, with WITH_BROWSER=1 Debian's chromium, with WITH_SYSTEMD=1 systemd's
# systemd-analyze (all for the tests; nothing starts systemd). Installs them
# with apt-get when run as root; otherwise says exactly what to run.
set -euo pipefail

PYTHON=${PYTHON:-python3}
missing=()

if ! ldconfig -p 2>/dev/null | grep -q 'libopus\.so\.0'; then
    missing+=(libopus0)
fi
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    missing+=(python3 python3-venv)
elif ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi
if [ "${WITH_REDIS:-0}" = 1 ] && ! command -v redis-server >/dev/null 2>&1; then
    missing+=(redis-server)  # the tests start their own on free ports (state_backend=redis)
fi
if [ "${WITH_BROWSER:-0}" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
    missing+=(chromium)  # the console's browser tests drive it headless (Playwright)
fi
if [ "${WITH_SYSTEMD:-0}" = 1 ] && ! command -v systemd-analyze >/dev/null 2>&1; then
    missing+=(systemd)  # systemd-analyze verify/security check pi/audio-device.service offline
fi
if [ "${WITH_PORTAUDIO:-0}" = 1 ] && ! ldconfig -p 2>/dev/null | grep -q 'libportaudio\.so\.2'; then
    missing+=(libportaudio2)
fi

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "missing Debian packages: ${missing[*]}" >&2
        echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "Python >= 3.11 is required ($PYTHON is $("$PYTHON" -V 2>&1))" >&2
    exit 1
fi
