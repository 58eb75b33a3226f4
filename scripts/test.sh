#!/usr/bin/env bash
# Runs Vigil's tests: installs the real peers the tests use when they are
# missing (as root, through apt-get), then go vet, staticcheck, go test
# -race, a bounded fuzzing run, and a check that the tests left no process
# running (staticcheck and fuzzing on a whole run only).
#
#   scripts/test.sh                 # everything
#   scripts/test.sh ./internal/...  # some packages
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests talk to: Mosquitto and its clients, the paper's
# Python simulator's paho-mqtt, ffmpeg (clips, RTP senders, ffprobe),
# Chromium (the web UI's browser tests, headless), nmap (its
# mqtt-subscribe script, merged into audits) and PostgreSQL (the store on
# a shared database; tests run their own server with initdb). The Docker runtime's
# tests use the Docker engine the machine runs.
need=()
command -v mosquitto >/dev/null || need+=(mosquitto)
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v mosquitto_pub >/dev/null || need+=(mosquitto-clients)
/usr/bin/python3 -c 'import paho.mqtt.client' 2>/dev/null || need+=(python3-paho-mqtt)
command -v chromium >/dev/null || need+=(chromium)
command -v nmap >/dev/null || need+=(nmap)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# GStreamer's RTSP server and the elements it serves a camera's file with.
/usr/bin/python3 -c "import gi, sys; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0')
from gi.repository import Gst, GstRtspServer; Gst.init(None)
sys.exit(any(Gst.ElementFactory.find(e) is None for e in ('qtdemux', 'h264parse', 'h265parse', 'rtph264pay', 'rtph265pay')))" 2>/dev/null ||
  need+=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)
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
# The processes running before the tests: any other left running after
# them, orphaned, is one a test started and did not stop.
before=$(ps -eo pid= | tr -d ' ' | sort)
echo "go vet ${pkgs[*]}"
go vet "${pkgs[@]}"
if [ $# -eq 0 ]; then
  echo "staticcheck ./..."
  go run honnef.co/go/tools/cmd/staticcheck@v0.6.1 ./...
fi
echo "go test -race ${pkgs[*]}"
go test -race -count=1 -timeout 20m "${pkgs[@]}"
# The store's suite again, on PostgreSQL (a server of the tests' own).
if [ $# -eq 0 ]; then
  echo "VIGIL_TEST_DATABASE=postgres go test -race ./internal/store"
  VIGIL_TEST_DATABASE=postgres go test -race -count=1 ./internal/store
fi

# A bounded run of the live-broker fuzzer (the seed corpus already ran
# above as a test): mutated packets of every type over real connections.
# VIGIL_FUZZTIME=0 skips it; longer runs are in docs/security.md. The
# budget is a count of executions (about a minute here), not a duration:
# Go 1.26's fuzzing coordinator can fail a run that ends on a deadline
# with "context deadline exceeded" and no failing input (go.dev/issue/75804,
# fixed in Go 1.27).
if [ $# -eq 0 ] && [ "${VIGIL_FUZZTIME:-60000x}" != "0" ]; then
  echo "go test -fuzz FuzzLiveBroker -fuzztime ${VIGIL_FUZZTIME:-60000x} ./internal/broker"
  go test -run '^$' -fuzz FuzzLiveBroker -fuzztime "${VIGIL_FUZZTIME:-60000x}" -fuzzminimizetime 5s -timeout 0 ./internal/broker
fi

# Bounded runs of the Home Assistant discovery fuzzers: configs and value
# templates come from anyone who may publish under the prefix.
if [ $# -eq 0 ] && [ "${VIGIL_FUZZTIME:-60000x}" != "0" ]; then
  for f in FuzzParse FuzzTemplate; do
    echo "go test -fuzz $f -fuzztime ${VIGIL_DISCOVERY_FUZZTIME:-200000x} ./internal/hadisc"
    go test -run '^$' -fuzz "^$f\$" -fuzztime "${VIGIL_DISCOVERY_FUZZTIME:-200000x}" -fuzzminimizetime 5s -timeout 0 ./internal/hadisc
  done
fi

# A bounded run of the RTSP depacketizer fuzzer: what an IP camera (or
# anything on its network) sends reaches it.
if [ $# -eq 0 ] && [ "${VIGIL_FUZZTIME:-60000x}" != "0" ]; then
  echo "go test -fuzz FuzzDepacketizer -fuzztime ${VIGIL_RTSP_FUZZTIME:-300000x} ./internal/rtspcam"
  go test -run '^$' -fuzz '^FuzzDepacketizer$' -fuzztime "${VIGIL_RTSP_FUZZTIME:-300000x}" -fuzzminimizetime 5s -timeout 0 ./internal/rtspcam
fi

# Tests leave nothing running: a peer, a vigil or a test binary that
# appeared during the run and is now an orphan (the test that started it
# is gone) was left behind; so was a container's shim.
sleep 2
left=""
for pid in $(comm -13 <(echo "$before") <(ps -eo pid= | tr -d ' ' | sort)); do
  [ "$(ps -o ppid= -p "$pid" 2>/dev/null | tr -d ' ')" = 1 ] || continue
  [[ "$(ps -o stat= -p "$pid" 2>/dev/null)" != Z* ]] || continue # exited, not yet reaped
  args=$(ps -o args= -p "$pid" 2>/dev/null) || continue
  if [[ "$args" =~ (mosquitto|vigil|\.test|ffmpeg|chrom|vlc|python3|nmap|gst-|containerd-shim|postgres) ]]; then
    left+="  $pid $args"$'\n'
  fi
done
if [ -n "$left" ]; then
  echo "the tests left these processes running:"; printf '%s' "$left"; exit 1
fi
