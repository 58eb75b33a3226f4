#!/usr/bin/env bash
# Runs Vigil's tests: installs the real peers the tests use when they are
# missing (as root, through apt-get), then go vet and go test -race.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh ./internal/...  # some packages
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests talk to: Mosquitto and its clients, the paper's
# Python simulator's paho-mqtt, ffmpeg (clips, RTP senders, ffprobe),
# Chromium (the web UI's browser tests, headless) and nmap (its
# mqtt-subscribe script, merged into audits). The Docker runtime's
# tests use the Docker engine the machine runs.
need=()
command -v mosquitto >/dev/null || need+=(mosquitto)
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v mosquitto_pub >/dev/null || need+=(mosquitto-clients)
/usr/bin/python3 -c 'import paho.mqtt.client' 2>/dev/null || need+=(python3-paho-mqtt)
command -v chromium >/dev/null || need+=(chromium)
command -v nmap >/dev/null || need+=(nmap)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "warning: ${need[*]} missing and cannot be installed here (not root or no apt-get); tests that need them are skipped" >&2
  fi
fi

pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./...)
echo "go vet ${pkgs[*]}"
go vet "${pkgs[@]}"
echo "go test -race ${pkgs[*]}"
go test -race -count=1 -timeout 20m "${pkgs[@]}"

# A bounded run of the live-broker fuzzer (the seed corpus already ran
# above as a test): mutated packets of every type over real connections.
# VIGIL_FUZZTIME=0 skips it; longer runs are in docs/security.md.
if [ $# -eq 0 ] && [ "${VIGIL_FUZZTIME:-60s}" != "0" ]; then
  echo "go test -fuzz FuzzLiveBroker -fuzztime ${VIGIL_FUZZTIME:-60s} ./internal/broker"
  go test -run '^$' -fuzz FuzzLiveBroker -fuzztime "${VIGIL_FUZZTIME:-60s}" -fuzzminimizetime 5s -timeout 0 ./internal/broker
fi
