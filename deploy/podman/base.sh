#!/bin/sh
# The CPU image's base where the registry's (python:3.11-slim-bookworm) cannot be pulled: Debian
# bookworm bootstrapped from Debian's packages, with what the image's Dockerfile expects of its
# base: python3 3.11 with venv (the build stage runs `python3 -m venv`), libpython3.11 (the bundled
# server's Python stub binds a shared libpython), apt (the final stage installs tini and nginx).
#
#   deploy/podman/base.sh localhost/ser-triton-base:bookworm [SUITE]
#
# Packages come from the Debian mirror this machine's apt uses (its security and updates suites
# too, so the base is as patched as the host's package lists allow); where apt names none,
# debootstrap's default. The base is slimmed as Debian's own slim images are: no documentation
# but the copyright files, no man pages, locales or package lists; dpkg is told to keep it so
# for what later layers install.
set -eu

NAME=${1:?give the image name, e.g. localhost/ser-triton-base:bookworm}
SUITE=${2:-bookworm}
PACKAGES=python3,python3-venv,libpython3.11,ca-certificates

if ! command -v debootstrap >/dev/null; then
    echo "deploy/podman/base.sh: debootstrap is missing: run \`make setup\` as root" >&2
    exit 1
fi
[ "$(id -u)" = 0 ] || { echo "deploy/podman/base.sh: debootstrap needs root" >&2; exit 1; }

# the repositories of this machine's apt lists for SUITE, SUITE-updates and SUITE-security
repositories=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' 2>/dev/null \
    | awk -v suite="$SUITE" '$2 == suite || $2 == suite "-updates" || $2 == suite "-security"' | sort -u || true)
mirror=$(printf '%s\n' "$repositories" | awk -v suite="$SUITE" '$2 == suite { print $1; exit }')

root=$(mktemp -d /var/tmp/ser-triton-base.XXXXXX)
trap 'rm -rf "$root"' EXIT INT TERM
echo "base: debootstrap $SUITE (minbase + $PACKAGES)${mirror:+ from the host's mirror}"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" $mirror >"$root.log" 2>&1 \
    || { tail -20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"

# what Debian's slim images leave out, here and in every later apt-get install
cat >"$root/etc/dpkg/dpkg.cfg.d/ser-triton-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
# and no package cache: what every apt-get leaves behind goes when it ends (as in Debian's images)
cat >"$root/etc/apt/apt.conf.d/ser-triton-slim" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF

if [ -n "$repositories" ]; then
    printf '%s\n' "$repositories" | awk '{ print "deb " $1 " " $2 " main" }' >"$root/etc/apt/sources.list"
    echo "base: upgrading from $(printf '%s\n' "$repositories" | awk '{ print $2 }' | tr '\n' ' ')"
    mount -t proc proc "$root/proc"
    upgraded=0
    chroot "$root" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get upgrade -y -qq' \
        >"$root.log" 2>&1 || { upgraded=$?; tail -20 "$root.log" >&2; }
    rm -f "$root.log"
    umount "$root/proc"
    [ "$upgraded" = 0 ] || { echo "deploy/podman/base.sh: apt-get upgrade in the base failed" >&2; exit 1; }
fi

chroot "$root" apt-get clean
find "$root/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* "$root"/usr/share/lintian/* \
    "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/debconf/*-old \
    "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/tmp/* "$root"/root/.[!.]* 2>/dev/null || true
# the build's own traces: the host's resolver and name, which the container engine sets at run time
: >"$root/etc/resolv.conf"
: >"$root/etc/hostname"

version=$(chroot "$root" python3 -c 'import platform; print(platform.python_version())')
tar --numeric-owner -C "$root" -c . | podman import \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV LANG=C.UTF-8" \
    --change "CMD [\"python3\"]" \
    --change "LABEL org.opencontainers.image.description=\"Debian $SUITE minbase with Python $version (debootstrap)\"" \
    --message "debootstrap --variant=minbase --include=$PACKAGES $SUITE" - "$NAME" >/dev/null
size=$(podman image inspect --format '{{.Size}}' "$NAME" | awk '{ printf "%.0f MB", $1 / 1e6 }')
echo "base: $NAME (Debian $SUITE, Python $version, $size)"
