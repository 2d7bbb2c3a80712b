#!/bin/sh
# `make setup`'s podman target: podman, the runtime and tools that `make image` and `make kube-play`
# use, and podman's configuration for this kind of machine, so that plain `podman` commands work.
# Installed when missing and we are root on Debian (CI, containers), as `make setup` installs nginx;
# otherwise it says how, and `make setup` goes on (the container tests then skip, saying why).
#
# What it installs (Debian packages, no recommends):
#   podman, runc     the engine and the OCI runtime it is configured with (crun fails where cgroups
#                    are in hybrid mode: "cgroups in hybrid mode not supported")
#   catatonit        the pause process of the infra container every `podman kube play` pod has
#   debootstrap      the fallback base image, bootstrapped from Debian packages where the registry
#                    base cannot be pulled (deploy/podman/base.sh)
# and writes /etc/containers/containers.conf where there is none (or brings an earlier one of its
# own up to date; anyone else's is left alone): runc, cgroupfs (no systemd needed), the file events
# logger, and default ulimits no higher than this machine's (podman's defaults are higher than many
# machines allow: "setrlimit RLIMIT_NOFILE: Operation not permitted", "error setting rlimit type 6",
# RLIMIT_NPROC).
set -eu

PACKAGES="podman runc catatonit debootstrap"
CONFIG=/etc/containers/containers.conf

missing=""
for package in $PACKAGES; do
    dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing="$missing $package"
done
if [ -n "$missing" ] && ! command -v dpkg-query >/dev/null 2>&1; then
    missing="$PACKAGES"
fi

if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "make setup: installing$missing (make image, make kube-play and the container tests)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    else
        echo "make setup: podman is missing or incomplete (need:$missing): make image, make kube-play and the" \
             "container tests use it; install it as root: apt-get install --no-install-recommends $PACKAGES" >&2
        exit 0
    fi
fi

MARK="# Written by ser-triton's \`make setup\`"
# ours (an earlier make setup's) is brought up to date; anyone else's is left as it is
if [ -e "$CONFIG" ] && ! head -n 1 "$CONFIG" | grep -qF "$MARK"; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    [ -e "$CONFIG" ] || echo "make setup: $CONFIG is missing; as root, \`make setup\` writes it" \
                             "(runc, cgroupfs, ulimits)" >&2
    exit 0
fi
# this machine's hard limits of open files and processes; processes also no more than
# kernel.pid_max, to which podman lowers its own limit once default_ulimits is set
files=$(awk '/^Max open files/ { print $5 }' /proc/self/limits)
processes=$(awk '/^Max processes/ { print $4 }' /proc/self/limits)
pid_max=$(cat /proc/sys/kernel/pid_max)
[ "$files" = unlimited ] && files=1048576
{ [ "$processes" = unlimited ] || [ "$processes" -gt "$pid_max" ]; } && processes=$pid_max
wanted=$(cat <<EOF
$MARK (deploy/podman/setup.sh): what podman needs on this machine.
[containers]
# no higher than this machine's hard limits, which a container cannot raise
default_ulimits = ["nofile=$files:$files", "nproc=$processes:$processes"]

[engine]
# crun refuses cgroups in hybrid mode; cgroupfs needs no systemd
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
)
if [ ! -e "$CONFIG" ] || [ "$(cat "$CONFIG")" != "$wanted" ]; then
    echo "make setup: writing $CONFIG (runtime runc, cgroup manager cgroupfs, nofile $files, nproc $processes)"
    mkdir -p "$(dirname "$CONFIG")"
    printf '%s\n' "$wanted" >"$CONFIG"
fi
