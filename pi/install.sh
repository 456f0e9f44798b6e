#!/usr/bin/env bash
# Install or upgrade the audio-device client on a Raspberry Pi, in one command, as root:
#
#   sudo pi/install.sh --server audio.example.com:50051 --code ABCD-EFGH-JKLM-NPQR --ca-fingerprint SHA256:<hex>
#
# Debian packages, the service user (groups gpio, audio), the virtualenv with the device wheel
# (pi/client: no server dependencies), the systemd unit, /etc/audio-device/device.env and, given
# --code, the enrolment (the key is made here and never leaves; docs/operate/enrolment.md). Safe to
# run again: it upgrades in place, keeps device.env's other lines, and keeps the key and certificate
# (an enrolled device is not enrolled again unless --force-enroll). Docs: docs/device/install.md.
set -euo pipefail
umask 022  # the virtualenv and the unit must be readable by the service; secrets get their own modes

usage() {
    cat <<'EOF'
usage: install.sh [--server HOST:PORT] [--code CODE (--ca-fingerprint SHA256:HEX | --ca FILE)]
                  [--enroll-server HOST:PORT] [--server-name NAME] [--trust-domain TD] [--force-enroll]
                  [--wheel FILE] [--extra pi|sim] [--python PYTHON] [--system-site-packages] [--root DIR] [--no-system]

  --server HOST:PORT        the audio service's device port (AUDIO_DEVICE_SERVER)
  --code CODE               a one-time enrolment code (audio-admin enrollments create)
  --ca-fingerprint SHA256:  the fleet CA's fingerprint printed with the code (or --ca FILE)
  --enroll-server HOST:PORT the enrolment port (default: the host of --server, port 50053)
  --server-name NAME        the name in the server's certificate, if not the host of --server
  --trust-domain TD         this fleet's trust domain, if not the default
  --force-enroll            enrol again although this device has a certificate (replaces its key)
  --wheel FILE              install this pi_audio_device wheel (default: build it from this checkout)
  --extra pi|sim            the wheel's extra: pi (default: gpiozero, lgpio, sounddevice) or sim
                            (gpiozero only: no speaker, --simulate; for CI or a test machine)
  --python PYTHON           the Python that makes the virtualenv (default python3, 3.11 or newer)
  --system-site-packages    let the virtualenv see Debian's Python packages (e.g. python3-lgpio on armv6l)
  --root DIR                install under DIR instead of / (tests, images): no apt-get, no service start
  --no-system               also skip users, groups, ownership and systemctl (an unprivileged dry install)
EOF
}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SERVICE_USER=audio-device
GROUPS_NEEDED=(gpio audio)
PREFIX=/opt/audio-device
VENV=$PREFIX/.venv
CONF_DIR=/etc/audio-device
ENV_FILE=$CONF_DIR/device.env
STATE_DIR=/var/lib/audio-device
PKI_DIR=$STATE_DIR/pki
UNIT_FILE=/etc/systemd/system/audio-device.service
DEFAULT_ENROLL_PORT=50053
APT_PACKAGES=(python3-venv libopus0 libportaudio2)
ARM32_BUILD=(gcc python3-dev libffi-dev)  # cffi has no PyPI wheel for 32-bit ARM: pip may build it
ARMV6_BUILD=(swig liblgpio-dev)           # nor lgpio for armv6l (Pi 1, Zero)

ROOT="" NO_SYSTEM=0 SERVER="" CODE="" PIN="" CA_FILE="" ENROLL_SERVER="" SERVER_NAME="" TRUST_DOMAIN=""
WHEEL="" EXTRA=pi PYTHON=python3 SYSTEM_SITE=0 FORCE_ENROLL=0

die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }
skip() { echo "install.sh: skipped ($1): ${*:2}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --server) SERVER=${2:?--server needs HOST:PORT}; shift 2 ;;
        --code) CODE=${2:?--code needs a code}; shift 2 ;;
        --ca-fingerprint) PIN=${2:?--ca-fingerprint needs SHA256:HEX}; shift 2 ;;
        --ca) CA_FILE=${2:?--ca needs a file}; shift 2 ;;
        --enroll-server) ENROLL_SERVER=${2:?--enroll-server needs HOST:PORT}; shift 2 ;;
        --server-name) SERVER_NAME=${2:?--server-name needs a name}; shift 2 ;;
        --trust-domain) TRUST_DOMAIN=${2:?--trust-domain needs a name}; shift 2 ;;
        --force-enroll) FORCE_ENROLL=1; shift ;;
        --wheel) WHEEL=${2:?--wheel needs a file}; shift 2 ;;
        --extra) EXTRA=${2:?--extra needs pi or sim}; shift 2 ;;
        --python) PYTHON=${2:?--python needs an interpreter}; shift 2 ;;
        --system-site-packages) SYSTEM_SITE=1; shift ;;
        --root) ROOT=${2:?--root needs a directory}; shift 2 ;;
        --no-system) NO_SYSTEM=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
done

# Everything is checked before anything is changed.
if [ -n "$CODE" ]; then
    [ -n "$PIN" ] || [ -n "$CA_FILE" ] || die "--code needs --ca-fingerprint (printed with the code) or --ca FILE"
    [ -n "$SERVER" ] || [ -n "$ENROLL_SERVER" ] || die "--code needs --server (or --enroll-server)"
fi
case "$EXTRA" in pi | sim) ;; *) die "--extra $EXTRA: pi or sim" ;; esac
if [ -n "$SERVER" ] && ! [[ "$SERVER" =~ ^[^[:space:]]+:[0-9]+$ ]]; then
    die "--server $SERVER is not HOST:PORT"
fi
if [ -n "$ROOT" ]; then
    mkdir -p "$ROOT"
    ROOT=$(cd "$ROOT" && pwd)
fi
if [ "$NO_SYSTEM" = 0 ] && [ "$(id -u)" != 0 ]; then
    die "run as root (sudo), or with --root DIR --no-system for an unprivileged install"
fi
if [ -n "$WHEEL" ]; then
    [ -f "$WHEEL" ] || die "--wheel $WHEEL: no such file"
    WHEEL=$(cd "$(dirname "$WHEEL")" && pwd)/$(basename "$WHEEL")
fi

# --- Debian packages -------------------------------------------------------------------------
packages=("${APT_PACKAGES[@]}")
case "$(uname -m)" in
    armv7l) packages+=("${ARM32_BUILD[@]}") ;;
    armv6l) packages+=("${ARM32_BUILD[@]}" "${ARMV6_BUILD[@]}") ;;
esac
if [ -n "$ROOT" ] || [ "$NO_SYSTEM" = 1 ]; then
    skip "--root/--no-system" apt-get install -y "${packages[@]}"
else
    say "Debian packages: ${packages[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PYTHON does not run, or is older than Python 3.11"

# --- the service user and its groups ---------------------------------------------------------
owner=()  # install(1) -o/-g arguments; empty with --no-system
if [ "$NO_SYSTEM" = 1 ]; then
    skip "--no-system" useradd --system "$SERVICE_USER" "(groups ${GROUPS_NEEDED[*]})"
else
    prefix=()
    if [ -n "$ROOT" ]; then prefix=(--prefix "$ROOT"); fi  # shadow's tools edit ROOT/etc/passwd, group, shadow
    for group in "${GROUPS_NEEDED[@]}"; do  # Raspberry Pi OS has both; another Debian may lack gpio
        grep -q "^$group:" "$ROOT/etc/group" || groupadd "${prefix[@]}" --system "$group"
    done
    if ! grep -q "^$SERVICE_USER:" "$ROOT/etc/passwd"; then
        useradd "${prefix[@]}" --system --user-group --home-dir "$STATE_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "audio-device client" "$SERVICE_USER"
        say "created the user $SERVICE_USER"
    fi
    usermod "${prefix[@]}" --append --groups "$(IFS=,; echo "${GROUPS_NEEDED[*]}")" "$SERVICE_USER"
    uid=$(awk -F: -v u="$SERVICE_USER" '$1 == u { print $3 }' "$ROOT/etc/passwd")
    gid=$(awk -F: -v u="$SERVICE_USER" '$1 == u { print $4 }' "$ROOT/etc/passwd")
    owner=(-o "$uid" -g "$gid")
fi

# --- directories: the state (and the keys) belong to the service user, the rest to root -----
install -d -m 0755 "$ROOT$PREFIX" "$ROOT$CONF_DIR" "$ROOT$(dirname "$UNIT_FILE")"
install -d -m 0750 "${owner[@]}" "$ROOT$STATE_DIR"
install -d -m 0700 "${owner[@]}" "$ROOT$PKI_DIR"

# --- the virtualenv and the device wheel (an upgrade keeps the virtualenv) -------------------
old=( "$ROOT$VENV"/lib/python3*/site-packages/pi_audio_service-*.dist-info )
if [ -e "${old[0]}" ]; then  # an install of the whole service (the old manual steps): start lean
    say "replacing the virtualenv $VENV, which holds the whole service (pi-audio-service)"
    rm -rf -- "$ROOT$VENV"
fi
if [ ! -x "$ROOT$VENV/bin/python" ]; then
    venv_args=()
    if [ "$SYSTEM_SITE" = 1 ]; then venv_args=(--system-site-packages); fi
    "$PYTHON" -m venv "${venv_args[@]}" "$ROOT$VENV"
    say "created the virtualenv $VENV"
fi
pip=("$ROOT$VENV/bin/python" -m pip --disable-pip-version-check -q)
build=""
if [ -z "$WHEEL" ]; then
    build=$(mktemp -d)
    trap 'rm -rf "$build"' EXIT
    rm -rf "$HERE/client/build"  # a stale build/ would carry modules no longer listed
    "${pip[@]}" wheel --no-deps -w "$build" "$HERE/client"
    WHEEL=$(ls "$build"/pi_audio_device-*.whl)
fi
"${pip[@]}" install --upgrade "$WHEEL[$EXTRA]"              # the dependencies, upgraded only if needed
"${pip[@]}" install --no-deps --force-reinstall "$WHEEL" # this version's code, even at the same number
say "installed $(basename "$WHEEL") in $VENV"

# --- the systemd unit ------------------------------------------------------------------------
install -m 0644 "$HERE/audio-device.service" "$ROOT$UNIT_FILE"

# --- device.env: created once, then only the lines this run sets are changed -----------------
env_path=$ROOT$ENV_FILE
if [ ! -f "$env_path" ]; then
    umask 027
    cat >"$env_path.new" <<EOF
# $ENV_FILE (written by pi/install.sh; your own lines are kept when it runs again).
# Every AUDIO_DEVICE_* setting: docs/reference/device-settings.md.
AUDIO_DEVICE_PKI_DIR=$PKI_DIR
AUDIO_DEVICE_LOG_FORMAT=text
EOF
    mv "$env_path.new" "$env_path"
    umask 022
fi
set_env() (  # set_env NAME VALUE: replace NAME's line or add one, atomically, never world-readable
    umask 027
    grep -v "^$1=" "$env_path" >"$env_path.new" || true
    echo "$1=$2" >>"$env_path.new"
    mv "$env_path.new" "$env_path"
)
unset_env() (
    umask 027
    grep -v "^$1=" "$env_path" >"$env_path.new" || true
    mv "$env_path.new" "$env_path"
)
if [ -n "$SERVER" ]; then set_env AUDIO_DEVICE_SERVER "$SERVER"; fi
if [ -n "$SERVER_NAME" ]; then set_env AUDIO_DEVICE_SERVER_NAME "$SERVER_NAME"; fi
if [ -n "$TRUST_DOMAIN" ]; then set_env AUDIO_DEVICE_TRUST_DOMAIN "$TRUST_DOMAIN"; fi
chmod 0640 "$env_path"

# --- enrolment: the key is made here, in the service user's PKI directory --------------------
enrolled=$( (find "$ROOT$PKI_DIR/devices" -name '*.crt' 2>/dev/null || true) | head -n 1)
if [ -n "$CODE" ] && [ -n "$enrolled" ] && [ "$FORCE_ENROLL" = 0 ]; then
    say "already enrolled (${enrolled#"$ROOT"}): keeping its key and certificate (--force-enroll to replace them)"
elif [ -n "$CODE" ]; then
    [ -n "$ENROLL_SERVER" ] || ENROLL_SERVER="${SERVER%:*}:$DEFAULT_ENROLL_PORT"
    enrol=("$ROOT$VENV/bin/audio-device" enroll --server "$ENROLL_SERVER" --code "$CODE" --pki-dir "$ROOT$PKI_DIR")
    if [ -n "$PIN" ]; then enrol+=(--ca-fingerprint "$PIN"); else enrol+=(--ca "$CA_FILE"); fi
    if [ -n "$SERVER_NAME" ]; then enrol+=(--server-name "$SERVER_NAME"); fi
    if [ -n "$TRUST_DOMAIN" ]; then enrol+=(--trust-domain "$TRUST_DOMAIN"); fi
    if [ "$FORCE_ENROLL" = 1 ]; then enrol+=(--force); fi
    status=0
    output=$("${enrol[@]}" 2>&1) || status=$?
    if [ "$status" != 0 ]; then
        echo "$output" >&2
        exit "$status"
    fi
    if ! [[ "$output" =~ enrolled\ as\ ([a-z0-9_-]+)/([a-z0-9_-]+): ]]; then
        echo "$output" >&2
        die "enrolment said nothing about the identity it got"
    fi
    set_env AUDIO_DEVICE_TENANT "${BASH_REMATCH[1]}"
    set_env AUDIO_DEVICE_DEVICE "${BASH_REMATCH[2]}"
    for name in AUDIO_DEVICE_CERT AUDIO_DEVICE_KEY AUDIO_DEVICE_CA; do  # files of an older install
        unset_env "$name"
    done
    set_env AUDIO_DEVICE_PKI_DIR "$PKI_DIR"
    say "enrolled as ${BASH_REMATCH[1]}/${BASH_REMATCH[2]}; the key never left this device"
    enrolled=yes
fi
if [ "$NO_SYSTEM" = 0 ]; then
    chown -R "$uid:$gid" "$ROOT$PKI_DIR"
    chown "root:$gid" "$env_path"
fi

# --- the service -----------------------------------------------------------------------------
if [ "$NO_SYSTEM" = 1 ]; then
    skip "--no-system" systemctl enable --now audio-device.service
elif [ -n "$ROOT" ]; then
    if command -v systemctl >/dev/null 2>&1; then
        systemctl --root="$ROOT" --quiet enable audio-device.service  # offline: the wants/ link only
    fi
    skip "--root" systemctl restart audio-device.service
else
    systemctl daemon-reload
    systemctl enable --quiet audio-device.service
    if { [ -n "$enrolled" ] || grep -q "^AUDIO_DEVICE_CERT=" "$env_path"; } && grep -q "^AUDIO_DEVICE_SERVER=" "$env_path"; then
        systemctl restart audio-device.service
        say "started: journalctl -u audio-device -f"
    else
        say "not started yet: enrol (--code) or provision the device and set AUDIO_DEVICE_SERVER, then run this again"
    fi
fi
grep -q '^AUDIO_DEVICE_SERVER=' "$env_path" || say "warning: no AUDIO_DEVICE_SERVER in $ENV_FILE (give --server)"
say "done"
