#!/usr/bin/env bash
# test-guest.sh - build and cache a tiny real Linux guest for kvmrec's tests:
# Debian's own kernel booted directly, an initramfs of busybox + qemu-ga, and an
# empty ext4 data disk.
#
# The story
# ---------
# Guests with no OS can be defined, started, snapshotted and destroyed, but they
# never answer the QEMU guest agent, never take a DHCP lease and ignore an ACPI
# power button. To test what kvmrec does through the agent (ping, addresses,
# fsfreeze, exec, file access, passwords, time, agent/ACPI shutdown and
# reboot) the tests need a guest that runs a real Linux. A disk image installed
# by debootstrap would take minutes and hundreds of MB; this one is made of
# three Debian packages and boots from its initramfs alone:
#
#   linux-image-<ver>-amd64   the kernel (linux-image-amd64 is only a metapackage)
#                             and the modules the guest needs: virtio_pci,
#                             virtio_console, virtio_net, virtio_blk, ext4,
#                             the ACPI power button (button, evdev) and a SATA
#                             cdrom with ISO 9660 (ahci, sr_mod, isofs), with their
#                             dependencies in load order (`modprobe
#                             --show-depends` against the extracted tree, after
#                             `depmod -b`: the package ships no modules.dep)
#   busybox-static            /init's shell and every other tool, as applet links
#   qemu-guest-agent          qemu-ga, plus the shared libraries `ldd` resolves
#                             for it, copied from THIS host (same Debian release;
#                             its library Depends are apt-installed if missing)
#
# Packages are fetched with `apt-get download` and unpacked with `dpkg-deb -x`:
# nothing is installed into the host for the guest itself. /init (PID 1, a
# busybox sh script) and the other guest files live in scripts/test-guest/rootfs/
# and are copied in as they are; see the comments in each. What qemu-ga runs
# and busybox lacks is ours: /sbin/shutdown (agent shutdown/halt/reboot), and
# /usr/sbin/chpasswd (guest-set-user-password; Debian's busybox-static has no
# chpasswd applet). /sbin/hwclock (guest-set-time) is busybox's. Users: root and
# tester (passwords locked); /etc/os-release says ID=kvmrec-test-guest.
#
# Booting it
# ----------
# These machines have /dev/kvm, but a real kernel hangs under <domain
# type='kvm'> (nested virtualization; in the decompressor for vmlinuz, and with
# no output at all for the PVH vmlinux): boot the guest with <domain
# type='qemu'> (TCG). The domain needs (`smoke` below has an example):
#
#   <os> with <type arch='x86_64' machine='pc'>hvm</type>, <kernel> (vmlinuz,
#        or vmlinux to boot faster), <initrd>, <cmdline> from info.json
#        (console=ttyS0) plus kvmrec.hostname=NAME, optionally kvmrec.shell=0
#   <features><acpi/></features>   or the ACPI power button does not exist
#   <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/>
#   a virtio disk from a COPY of data.qcow2 (mounted rw on /mnt/data), a virtio
#   NIC on a network with DHCP (first ethernet interface, busybox udhcpc),
#   a serial console; 128-256 MiB and 1 vCPU are plenty.
#
# Under TCG guest-ping answers ~6 s after `virsh start` (vmlinuz) or ~3.7 s
# (vmlinux); the agent reports the DHCP address ~3 s later. The serial console
# shows `kvmrec-guest: agent started` when qemu-ga runs.
#
# The cache
# ---------
# Output goes to $KVMREC_TEST_GUEST_DIR (default /var/cache/kvmrec/test-guest),
# into a subdirectory named by a hash of this script, everything under
# scripts/test-guest/, the package versions apt would download and the host's
# versions of qemu-ga's library packages. A symlink `current` points to the
# newest. Each subdirectory holds:
#
#   vmlinuz      the kernel (bzImage)
#   vmlinux      the same kernel uncompressed (an ELF with a PVH entry note):
#                QEMU boots it directly, skipping the xz decompressor, which is
#                slow under TCG: guest-ping answers after ~3.7 s instead of ~6 s.
#                Optional: absent if the kernel has no CONFIG_PVH.
#   initrd.img   the initramfs (newc cpio, gzip)
#   data.qcow2   16 MiB qcow2 with an empty ext4 file system labelled
#                kvmrec-data (a template: give each guest its own copy);
#                the guest mounts it read-write on /mnt/data
#   info.json    kernel version, package versions, modules, and the kernel
#                command line to use (console=ttyS0; add kvmrec.hostname=NAME)
#
# A subdirectory appears only complete (built in a temporary directory, then
# renamed), so an interrupted build leaves no half cache, and `build` with a
# complete one only prints its path. CI machines outlive a clone, so the cache
# is outside the repository. Apt's candidate versions are remembered with a
# fingerprint of apt's lists: apt-cache alone takes ~0.5 s on these machines
# (they keep no pkgcache.bin). `apt-get update` runs only when apt knows no
# candidate or a download fails.
#
# Usage: scripts/test-guest.sh build|path|smoke|help   (as root)
#
#   build   build the image unless the cache has it; print its directory on
#           stdout as the last line (logs go to stderr)
#   path    print the directory `current` points to; exit 1 if none is built
#   smoke   boot a throwaway guest kt-img-smoke (TCG) from the current image
#           (vmlinux if there is one), wait for guest-ping, report the time and
#           clean up
#
# Environment:
#   KVMREC_TEST_GUEST_DIR       cache root (default /var/cache/kvmrec/test-guest)
#   KVMREC_TEST_GUEST_KEEP      how many built images to keep (default 3)
#   KVMREC_TEST_GUEST_TIMEOUT   smoke: seconds to wait for the agent (default 90)
#
# Facts behind all this: /work/shared/REAL-STACK.md.

set -euo pipefail

SCRIPT_PATH=$(realpath -- "${BASH_SOURCE[0]}")
SCRIPT_DIR=$(dirname -- "$SCRIPT_PATH")
GUEST_SRC=$SCRIPT_DIR/test-guest
ROOTFS_SRC=$GUEST_SRC/rootfs
OUT_DIR=$(realpath -m -- "${KVMREC_TEST_GUEST_DIR:-/var/cache/kvmrec/test-guest}")
KEEP=${KVMREC_TEST_GUEST_KEEP:-3}
SMOKE_TIMEOUT=${KVMREC_TEST_GUEST_TIMEOUT:-90}
RESOLUTION_FILE=$OUT_DIR/.apt-resolution
LOCK_FILE=$OUT_DIR/.lock
LIBVIRT_URI=qemu:///system

KERNEL_META=linux-image-amd64
BUSYBOX_PKG=busybox-static
AGENT_PKG=qemu-guest-agent
CMDLINE="console=ttyS0"
DATA_LABEL=kvmrec-data
DATA_SIZE=16M
AGENT_CHANNEL=org.qemu.guest_agent.0
# Modules /init loads, with their dependencies. The optional ones may be built
# in (then there is nothing to load) or missing: the power button (acpid), and
# a SATA cdrom with ISO 9660 on it (a cloud-init NoCloud seed the tests mount).
MODULES=(virtio_pci virtio_console virtio_net virtio_blk crc32c_generic ext4)
OPTIONAL_MODULES=(button evdev ahci sr_mod isofs)
# Left out although ext4's soft dependency names it: crc32c-intel refuses a CPU
# without SSE4.2 (QEMU's default TCG CPU) and crc32c_generic serves anyway.
EXCLUDED_MODULES=(crc32c_intel)
# Host tools the build needs, as command:package.
TOOLS=(
    apt-get:apt dpkg-deb:dpkg dpkg-query:dpkg depmod:kmod modprobe:kmod
    ldd:libc-bin ldconfig:libc-bin mkfs.ext4:e2fsprogs qemu-img:qemu-utils
    gzip:gzip xz:xz-utils flock:util-linux sha256sum:coreutils
)
IMAGE_FILES=(vmlinuz initrd.img data.qcow2 info.json)

APT_UPDATED=false
WORK= # temporary build directory, removed on exit
KEY=  # the image's cache key (subdirectory name)

# Set by resolve_versions.
KERNEL_PKG=
KERNEL_VERSION=
BUSYBOX_VERSION=
AGENT_VERSION=
AGENT_DEPENDS=

log() { printf 'test-guest: %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

usage() {
    cat <<EOF
usage: $(basename -- "$0") build|path|smoke|help   (run as root)

  build   build the test guest image unless it is cached; print its directory
  path    print the directory of the current image (exit 1 if none is built)
  smoke   boot kt-img-smoke from the current image, wait for guest-ping, clean up

cache: $OUT_DIR (set KVMREC_TEST_GUEST_DIR to change)
EOF
}

require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        die "must run as root (apt, mknod, chroot, libvirt); try: sudo $0 ${1:-}"
    fi
}

now_ms() { date +%s%3N; }

cleanup() {
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        rm -rf -- "$WORK"
    fi
}

# ----------------------------------------------------------------------- apt

apt_update() {
    $APT_UPDATED && return 0
    log "apt-get update"
    apt-get update -qq -o DPkg::Lock::Timeout=300 >&2 || die "apt-get update failed"
    APT_UPDATED=true
}

# apt_install PKG...: install plain packages (tools, libraries) on the host.
apt_install() {
    log "installing on the host: $*"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "$@" >&2; then
        apt_update
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "$@" >&2 ||
            die "apt-get install $* failed"
    fi
}

installed() {
    local status
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) || return 1
    [[ $status == ii* ]]
}

ensure_tools() {
    local entry missing=()
    for entry in "${TOOLS[@]}"; do
        command -v "${entry%%:*}" >/dev/null 2>&1 || missing+=("${entry#*:}")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
        apt_install "${missing[@]}"
    fi
}

# apt_lists_fingerprint: changes whenever apt's idea of candidates may change.
apt_lists_fingerprint() {
    local files=()
    shopt -s nullglob
    files=(/var/lib/apt/lists/*_Packages* /etc/apt/sources.list /etc/apt/sources.list.d/*
        /etc/apt/preferences /etc/apt/preferences.d/*)
    shopt -u nullglob
    { stat -c '%n %s %Y' -- "${files[@]}" 2>/dev/null || true; } | sha256sum | cut -c1-64
}

# query_candidates: ask apt-cache for the candidate versions (slow: ~0.5 s).
# Prints key=value lines; fails if a package has no candidate.
query_candidates() {
    local out
    out=$(apt-cache show --no-all-versions "$KERNEL_META" "$BUSYBOX_PKG" "$AGENT_PKG" 2>/dev/null) || return 1
    awk -v meta="$KERNEL_META" -v bb="$BUSYBOX_PKG" -v ga="$AGENT_PKG" '
        /^Package: / { pkg = $2 }
        /^Version: / { ver[pkg] = $2 }
        /^Depends: / { dep[pkg] = substr($0, 10) }
        END {
            n = split(dep[meta], parts, /, */)
            for (i = 1; i <= n; i++) {
                split(parts[i], words, / /)
                if (words[1] ~ /^linux-image-[0-9].*-amd64$/) {
                    kpkg = words[1]
                    # "linux-image-X-amd64 (= V)": the version comes along
                    if (words[2] == "(=") { kver = words[3]; sub(/\)$/, "", kver) }
                    break
                }
            }
            if (kpkg == "" || ver[bb] == "" || ver[ga] == "") exit 1
            printf "kernel_pkg=%s\n", kpkg
            if (kver != "") printf "kernel_version=%s\n", kver
            printf "busybox_version=%s\n", ver[bb]
            printf "agent_version=%s\n", ver[ga]
            n = split(dep[ga], parts, /, */)
            libs = ""
            for (i = 1; i <= n; i++) {
                split(parts[i], alts, / *\| */)
                split(alts[1], words, / /)
                libs = libs (libs == "" ? "" : " ") words[1]
            }
            printf "agent_depends=%s\n", libs
        }' <<<"$out" || return 1
}

query_kernel_version() {
    apt-cache show --no-all-versions "$1" 2>/dev/null | awk '/^Version: / { print $2; exit }'
}

# parse_resolution: set the version variables from key=value lines on stdin.
parse_resolution() {
    local key value
    while IFS='=' read -r key value; do
        case $key in
        kernel_pkg) KERNEL_PKG=$value ;;
        kernel_version) KERNEL_VERSION=$value ;;
        busybox_version) BUSYBOX_VERSION=$value ;;
        agent_version) AGENT_VERSION=$value ;;
        agent_depends) AGENT_DEPENDS=$value ;;
        esac
    done
    [ -n "$KERNEL_PKG" ] && [ -n "$KERNEL_VERSION" ] && [ -n "$BUSYBOX_VERSION" ] &&
        [ -n "$AGENT_VERSION" ] && [ -n "$AGENT_DEPENDS" ]
}

# resolve_versions FRESH: set KERNEL_PKG etc. from the remembered resolution if
# apt's lists have not changed since (and FRESH is false), else from apt-cache,
# running apt-get update first if apt knows no candidate.
resolve_versions() {
    local fresh=$1 fingerprint cached resolved kver
    fingerprint=$(apt_lists_fingerprint)
    if ! $fresh && [ -r "$RESOLUTION_FILE" ]; then
        cached=$(<"$RESOLUTION_FILE")
        if [[ $cached == "fingerprint=$fingerprint"$'\n'* ]] && parse_resolution <<<"$cached"; then
            return 0
        fi
    fi
    if ! resolved=$(query_candidates); then
        apt_update
        fingerprint=$(apt_lists_fingerprint)
        resolved=$(query_candidates) ||
            die "apt knows no candidate for $KERNEL_META, $BUSYBOX_PKG or $AGENT_PKG"
    fi
    if ! grep -q '^kernel_version=' <<<"$resolved"; then
        kver=$(query_kernel_version "$(sed -n 's/^kernel_pkg=//p' <<<"$resolved")")
        [ -n "$kver" ] || die "apt knows no candidate for the kernel package of $KERNEL_META"
        resolved=$resolved$'\n'kernel_version=$kver
    fi
    parse_resolution <<<"$resolved" || die "could not resolve the package versions"
    mkdir -p -- "$OUT_DIR"
    printf 'fingerprint=%s\n%s\n' "$fingerprint" "$resolved" >"$RESOLUTION_FILE.tmp.$$"
    mv -f -- "$RESOLUTION_FILE.tmp.$$" "$RESOLUTION_FILE"
}

# ensure_agent_libs: qemu-ga's library packages must be on the host, since its
# libraries are copied from here.
ensure_agent_libs() {
    local pkg missing=()
    for pkg in $AGENT_DEPENDS; do
        installed "$pkg" || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
}

# host_lib_versions: the host's versions of qemu-ga's library packages.
host_lib_versions() {
    local pkgs
    read -r -a pkgs <<<"$AGENT_DEPENDS"
    dpkg-query -W -f='${Package}=${Version}\n' "${pkgs[@]}" 2>/dev/null | LC_ALL=C sort
}

# ------------------------------------------------------------------- cache

# compute_key: hash of this script, the guest files (with their exec bit) and
# the versions of everything that goes into the image.
compute_key() {
    local f rel mode
    {
        printf 'script\n'
        cat -- "$SCRIPT_PATH"
        while IFS= read -r -d '' f; do
            rel=${f#"$GUEST_SRC"/}
            if [ -x "$f" ]; then mode=x; else mode=-; fi
            printf '\nfile %s %s\n' "$rel" "$mode"
            cat -- "$f"
        done < <(find "$GUEST_SRC" -type f -print0 | LC_ALL=C sort -z)
        printf '\npackages\n%s=%s\n%s=%s\n%s=%s\n' "$KERNEL_PKG" "$KERNEL_VERSION" \
            "$BUSYBOX_PKG" "$BUSYBOX_VERSION" "$AGENT_PKG" "$AGENT_VERSION"
        host_lib_versions
    } | sha256sum | cut -c1-16
}

image_complete() {
    local f
    [ -d "$1" ] || return 1
    for f in "${IMAGE_FILES[@]}"; do
        [ -s "$1/$f" ] || return 1
    done
}

# publish KEY: point `current` at KEY (atomically) and print the directory.
# Touch it: prune keeps the most recently used images.
publish() {
    local key=$1 link=$OUT_DIR/current
    touch -c -- "$OUT_DIR/$key" 2>/dev/null || true
    if [ "$(readlink -- "$link" 2>/dev/null || true)" != "$key" ]; then
        ln -sfn -- "$key" "$link.tmp.$$"
        mv -fT -- "$link.tmp.$$" "$link"
    fi
    printf '%s\n' "$OUT_DIR/$key"
}

# prune KEY: keep KEY and the KEEP-1 most recently used others; drop leftovers of
# interrupted builds (we hold the lock: no other build runs).
prune() {
    local keep=$1 dir n=1
    rm -rf -- "$OUT_DIR"/.build.*
    while IFS= read -r dir; do
        [ "$(basename -- "$dir")" != "$keep" ] || continue
        n=$((n + 1))
        if [ "$n" -gt "$KEEP" ]; then
            log "removing old image $dir"
            rm -rf -- "$dir"
        fi
    done < <(find "$OUT_DIR" -mindepth 1 -maxdepth 1 -type d -regextype posix-extended \
        -regex '.*/[0-9a-f]{16}' -printf '%T@ %p\n' | sort -rn | cut -d' ' -f2-)
}

# ------------------------------------------------------------------- build

# download_debs DIR: apt-get download the exact versions resolved.
download_debs() {
    local dir=$1
    mkdir -p -- "$dir"
    log "downloading $KERNEL_PKG=$KERNEL_VERSION $BUSYBOX_PKG=$BUSYBOX_VERSION $AGENT_PKG=$AGENT_VERSION"
    # Sandbox user root: _apt may not write into our directory.
    (cd -- "$dir" && apt-get download -q -o APT::Sandbox::User=root \
        "$KERNEL_PKG=$KERNEL_VERSION" "$BUSYBOX_PKG=$BUSYBOX_VERSION" "$AGENT_PKG=$AGENT_VERSION") >&2
}

# resolve_modules KROOT KVER: print the module files (relative to
# KROOT/lib/modules/KVER) to load, in order, each once.
resolve_modules() {
    local kroot=$1 kver=$2 mod out
    {
        for mod in "${MODULES[@]}"; do
            out=$(modprobe -d "$kroot" -S "$kver" --show-depends "$mod") ||
                die "module $mod not found in $KERNEL_PKG"
            printf '%s\n' "$out"
        done
        for mod in "${OPTIONAL_MODULES[@]}"; do
            if out=$(modprobe -d "$kroot" -S "$kver" --show-depends "$mod" 2>/dev/null); then
                printf '%s\n' "$out"
            else
                log "warning: module $mod not in $KERNEL_PKG (built in, or what needs it will not work)"
            fi
        done
    } | awk -v base="$kroot/lib/modules/$kver/" -v excluded="${EXCLUDED_MODULES[*]}" '
        BEGIN { n = split(excluded, e, " "); for (i = 1; i <= n; i++) skip[e[i]] = 1 }
        $1 == "insmod" && !seen[$2]++ {
            name = $2
            sub(/.*\//, "", name)
            sub(/\.ko.*/, "", name)
            gsub(/-/, "_", name)
            if (!(name in skip)) print substr($2, length(base) + 1)
        }'
}

# install_module SRC DEST: copy a module, decompressing it (busybox insmod
# takes plain .ko files).
install_module() {
    local src=$1 dest=$2
    mkdir -p -- "$(dirname -- "$dest")"
    case $src in
    *.ko.xz) xz -dc -- "$src" >"${dest%.xz}" ;;
    *.ko.zst) zstd -qdc -- "$src" >"${dest%.zst}" ;;
    *.ko.gz) gzip -dc -- "$src" >"${dest%.gz}" ;;
    *) cp -- "$src" "$dest" ;;
    esac
}

# copy_overlay: scripts/test-guest/rootfs into the image, with fixed modes.
copy_overlay() {
    local rootfs=$1 f rel mode
    while IFS= read -r -d '' f; do
        rel=${f#"$ROOTFS_SRC"/}
        mode=0644
        [ ! -x "$f" ] || mode=0755
        [ "$rel" != etc/shadow ] || mode=0600
        install -D -m "$mode" -- "$f" "$rootfs/$rel"
    done < <(find "$ROOTFS_SRC" -type f -print0)
}

# extract_vmlinux BZIMAGE OUT: the uncompressed kernel ELF inside a bzImage
# whose payload is xz-compressed (Debian's). Fails if there is none.
extract_vmlinux() {
    local in=$1 out=$2 off
    off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' -- "$in" | head -n 1 | cut -d: -f1) || true
    [ -n "$off" ] || return 1
    # xz stops reading after the stream: tail may die of SIGPIPE.
    { tail -c +"$((off + 1))" -- "$in" || :; } | xz -dcq --single-stream >"$out" || return 1
    [ "$(head -c 4 -- "$out" | od -A n -t x1 | tr -d ' ')" = 7f454c46 ]
}

# json_str S: S as a JSON string (our values hold no control characters).
json_str() {
    local s=${1//\\/\\\\}
    printf '"%s"' "${s//\"/\\\"}"
}

os_release_value() {
    sed -n "s/^$1=//p" "$ROOTFS_SRC/etc/os-release" | tr -d '"'
}

# write_info FILE KVER MODULE...
write_info() {
    local file=$1 kver=$2 pvh=null line sep m
    shift 2
    if [ -s "$(dirname -- "$file")/vmlinux" ]; then pvh='"vmlinux"'; fi
    {
        printf '{\n'
        printf '  "key": %s,\n' "$(json_str "$KEY")"
        printf '  "kernel_version": %s,\n' "$(json_str "$kver")"
        printf '  "cmdline": %s,\n' "$(json_str "$CMDLINE")"
        printf '  "hostname_parameter": "kvmrec.hostname",\n'
        printf '  "domain_type": "qemu",\n'
        printf '  "kernel": "vmlinuz",\n  "kernel_pvh": %s,\n' "$pvh"
        printf '  "initrd": "initrd.img",\n  "data_disk": "data.qcow2",\n'
        printf '  "data_label": %s,\n  "data_mount": "/mnt/data",\n' "$(json_str "$DATA_LABEL")"
        printf '  "agent_channel": %s,\n' "$(json_str "$AGENT_CHANNEL")"
        printf '  "users": ["root", "tester"],\n'
        printf '  "os_release": {"ID": %s, "NAME": %s, "VERSION_ID": %s},\n' \
            "$(json_str "$(os_release_value ID)")" "$(json_str "$(os_release_value NAME)")" \
            "$(json_str "$(os_release_value VERSION_ID)")"
        printf '  "packages": {\n'
        printf '    %s: %s,\n' "$(json_str "$KERNEL_PKG")" "$(json_str "$KERNEL_VERSION")"
        printf '    %s: %s,\n' "$(json_str "$BUSYBOX_PKG")" "$(json_str "$BUSYBOX_VERSION")"
        printf '    %s: %s' "$(json_str "$AGENT_PKG")" "$(json_str "$AGENT_VERSION")"
        while IFS= read -r line; do
            [ -n "$line" ] || continue
            printf ',\n    %s: %s' "$(json_str "${line%%=*}")" "$(json_str "${line#*=}")"
        done < <(host_lib_versions)
        printf '\n  },\n'
        printf '  "modules": ['
        sep=
        for m in "$@"; do
            m=${m##*/}
            printf '%s%s' "$sep" "$(json_str "${m%%.ko*}")"
            sep=', '
        done
        printf '],\n'
        printf '  "built": %s\n' "$(json_str "$(date -u +%Y-%m-%dT%H:%M:%SZ)")"
        printf '}\n'
    } >"$file"
}

# build_image: make $WORK/image from the debs in $WORK/debs.
build_image() {
    local debs=$WORK/debs kroot=$WORK/kernel bbroot=$WORK/busybox garoot=$WORK/agent
    local rootfs=$WORK/rootfs image=$WORK/image
    local kver bb ga lib line missing=() mods=() mod applet libdirs=() t0
    mkdir -p -- "$kroot" "$bbroot" "$garoot" "$rootfs" "$image"

    t0=$(now_ms)
    dpkg-deb -x "$debs/${KERNEL_PKG}_"*.deb "$kroot"
    dpkg-deb -x "$debs/${BUSYBOX_PKG}_"*.deb "$bbroot"
    dpkg-deb -x "$debs/${AGENT_PKG}_"*.deb "$garoot"
    log "unpacked the packages in $(($(now_ms) - t0)) ms"
    kver=${KERNEL_PKG#linux-image-}
    [ -d "$kroot/lib/modules/$kver" ] || die "$KERNEL_PKG has no lib/modules/$kver"
    bb=$bbroot/bin/busybox
    ga=$garoot/usr/sbin/qemu-ga
    [ -x "$bb" ] || die "$BUSYBOX_PKG has no bin/busybox"
    [ -x "$ga" ] || die "$AGENT_PKG has no usr/sbin/qemu-ga"

    # Directory skeleton, device nodes the kernel needs before /init mounts
    # devtmpfs (its initial console), busybox and its applet links.
    mkdir -p -- "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc/kvmrec,lib,lib64,proc,sys,dev,run,tmp,var/log}
    mkdir -p -- "$rootfs"/{mnt/data,root,home/tester}
    chmod 1777 "$rootfs/tmp"
    chmod 0700 "$rootfs/root"
    chown 1000:1000 "$rootfs/home/tester"
    ln -s ../run "$rootfs/var/run"
    mknod -m 0600 "$rootfs/dev/console" c 5 1 || log "warning: mknod dev/console failed"
    mknod -m 0666 "$rootfs/dev/null" c 1 3 || log "warning: mknod dev/null failed"
    install -m 0755 -- "$bb" "$rootfs/bin/busybox"
    while IFS= read -r applet; do
        case $applet in
        "" | linuxrc | bin/busybox) continue ;;
        esac
        [ ! -e "$ROOTFS_SRC/$applet" ] || continue # a file of ours wins
        mkdir -p -- "$rootfs/$(dirname -- "$applet")"
        ln -sfn /bin/busybox "$rootfs/$applet"
    done < <("$bb" --list-full)

    # qemu-ga and the libraries ldd resolves for it on this host.
    install -D -m 0755 -- "$ga" "$rootfs/usr/sbin/qemu-ga"
    while IFS= read -r line; do
        case $line in
        *"not found"*) missing+=("${line%% *}") ;;
        *" => /"*)
            lib=${line#*=> }
            lib=${lib%% (*}
            ;;
        /*)
            lib=${line%% (*}
            ;;
        *) continue ;;
        esac
        [ -n "${lib:-}" ] || continue
        install -D -m 0755 -- "$(realpath -- "$lib")" "$rootfs$lib"
        libdirs+=("$(dirname -- "$lib")")
        lib=
    done < <(ldd "$ga" | sed 's/^[[:space:]]*//')
    if [ "${#missing[@]}" -gt 0 ]; then
        die "qemu-ga needs libraries this host lacks: ${missing[*]} (install them with apt)"
    fi
    printf '%s\n' "${libdirs[@]}" | sort -u >"$rootfs/etc/ld.so.conf"
    ldconfig -r "$rootfs"

    # Kernel modules, in load order.
    depmod -b "$kroot" "$kver"
    line=$(resolve_modules "$kroot" "$kver")
    mapfile -t mods <<<"$line"
    [ -n "$line" ] || die "no modules resolved"
    for mod in "${mods[@]}"; do
        install_module "$kroot/lib/modules/$kver/$mod" "$rootfs/lib/modules/$kver/$mod"
    done
    printf '%s\n' "${mods[@]%.xz}" | sed -e 's/\.zst$//' -e 's/\.gz$//' >"$rootfs/etc/kvmrec/modules"
    log "modules: $(printf '%s ' "${mods[@]##*/}")"

    copy_overlay "$rootfs"
    [ -x "$rootfs/init" ] || die "$ROOTFS_SRC/init is missing or not executable"

    # Does it run? (The host kernel runs the guest's user space just as well.)
    chroot "$rootfs" /bin/sh -c 'true' || die "busybox does not run in the image"
    chroot "$rootfs" /usr/sbin/qemu-ga --version >/dev/null ||
        die "qemu-ga does not run in the image (libraries?)"

    t0=$(now_ms)
    (cd -- "$rootfs" && find . -mindepth 1 | LC_ALL=C sort | "$bb" cpio -o -H newc 2>/dev/null) |
        gzip -n >"$image/initrd.img"
    log "initramfs: $(du -k "$image/initrd.img" | cut -f1) KiB (gzip) from $(du -sk "$rootfs" | cut -f1) KiB in $(($(now_ms) - t0)) ms"
    install -m 0644 -- "$kroot/boot/vmlinuz-$kver" "$image/vmlinuz"
    if ! grep -qx 'CONFIG_PVH=y' "$kroot/boot/config-$kver"; then
        log "note: $KERNEL_PKG has no CONFIG_PVH: no vmlinux"
    elif extract_vmlinux "$image/vmlinuz" "$image/vmlinux"; then
        chmod 0644 "$image/vmlinux"
    else
        rm -f -- "$image/vmlinux"
        log "warning: could not extract vmlinux from vmlinuz: no vmlinux"
    fi

    truncate -s "$DATA_SIZE" "$WORK/data.raw"
    mkfs.ext4 -q -F -L "$DATA_LABEL" "$WORK/data.raw" >&2
    qemu-img convert -q -f raw -O qcow2 "$WORK/data.raw" "$image/data.qcow2"

    write_info "$image/info.json" "$kver" "${mods[@]}"
    chmod 0755 "$image"
}

cmd_build() {
    local t0
    t0=$(now_ms)
    require_root build
    mkdir -p -- "$OUT_DIR"
    resolve_versions false
    ensure_agent_libs
    KEY=$(compute_key)
    if image_complete "$OUT_DIR/$KEY"; then
        log "cached: $OUT_DIR/$KEY"
        publish "$KEY"
        return 0
    fi

    exec 9>"$LOCK_FILE"
    flock -w 900 9 || die "another build holds $LOCK_FILE"
    if image_complete "$OUT_DIR/$KEY"; then # built while we waited
        publish "$KEY"
        return 0
    fi
    log "building $KEY into $OUT_DIR"
    ensure_tools
    rm -rf -- "$OUT_DIR"/.build.*
    WORK=$(mktemp -d "$OUT_DIR/.build.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT TERM

    if ! download_debs "$WORK/debs"; then
        $APT_UPDATED && die "apt-get download failed"
        log "download failed: refreshing apt's lists"
        apt_update
        resolve_versions true
        ensure_agent_libs
        KEY=$(compute_key)
        if image_complete "$OUT_DIR/$KEY"; then
            publish "$KEY"
            return 0
        fi
        rm -rf -- "$WORK/debs"
        download_debs "$WORK/debs" || die "apt-get download failed"
    fi
    build_image
    if [ -e "$OUT_DIR/$KEY" ]; then # an incomplete one cannot exist, but be sure
        rm -rf -- "${OUT_DIR:?}/${KEY:?}"
    fi
    mv -T -- "$WORK/image" "$OUT_DIR/$KEY"
    prune "$KEY"
    log "built $OUT_DIR/$KEY in $(($(now_ms) - t0)) ms"
    publish "$KEY"
}

current_dir() {
    local dir
    dir=$(realpath -e -- "$OUT_DIR/current" 2>/dev/null) || return 1
    image_complete "$dir" || return 1
    printf '%s\n' "$dir"
}

cmd_path() {
    current_dir || {
        log "no test guest image in $OUT_DIR: run '$0 build'"
        return 1
    }
}

# ------------------------------------------------------------------- smoke

SMOKE_NAME=kt-img-smoke
SMOKE_TMP=

virsh_() { virsh -q -c "$LIBVIRT_URI" "$@"; }

smoke_cleanup() {
    if virsh_ domstate "$SMOKE_NAME" >/dev/null 2>&1; then
        virsh_ destroy "$SMOKE_NAME" >/dev/null 2>&1 || true
        virsh_ undefine "$SMOKE_NAME" >/dev/null 2>&1 || true
    fi
    if [ -n "$SMOKE_TMP" ]; then rm -rf -- "$SMOKE_TMP"; fi
}

cmd_smoke() {
    local dir kernel t0 deadline reply
    require_root smoke
    dir=$(current_dir) || die "no test guest image in $OUT_DIR: run '$0 build' first"
    smoke_cleanup # a leftover of an interrupted smoke
    SMOKE_TMP=$(mktemp -d /var/tmp/kt-img-smoke.XXXXXX)
    trap smoke_cleanup EXIT
    trap 'exit 130' INT TERM
    cp -- "$dir/data.qcow2" "$SMOKE_TMP/data.qcow2"
    kernel=$dir/vmlinuz
    [ ! -s "$dir/vmlinux" ] || kernel=$dir/vmlinux
    cat >"$SMOKE_TMP/domain.xml" <<EOF
<domain type='qemu'>
  <name>$SMOKE_NAME</name>
  <memory unit='MiB'>192</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$kernel</kernel>
    <initrd>$dir/initrd.img</initrd>
    <cmdline>$CMDLINE kvmrec.hostname=$SMOKE_NAME</cmdline>
  </os>
  <features><acpi/></features>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$SMOKE_TMP/data.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='pty'><log file='$SMOKE_TMP/console.log'/><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <channel type='unix'><target type='virtio' name='$AGENT_CHANNEL'/></channel>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
    virsh_ define "$SMOKE_TMP/domain.xml" >/dev/null
    t0=$(now_ms)
    virsh_ start "$SMOKE_NAME" >/dev/null
    deadline=$((SECONDS + SMOKE_TIMEOUT))
    until reply=$(virsh_ qemu-agent-command "$SMOKE_NAME" '{"execute":"guest-ping"}' 2>/dev/null); do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "last lines of the console:"
            tail -n 30 -- "$SMOKE_TMP/console.log" | sed 's/^/    /' >&2 || true
            die "no guest-ping answer within ${SMOKE_TIMEOUT}s"
        fi
        sleep 0.2
    done
    log "guest-ping answered $(($(now_ms) - t0)) ms after start (kernel ${kernel##*/}): $reply"
    reply=$(virsh_ qemu-agent-command "$SMOKE_NAME" '{"execute":"guest-get-host-name"}')
    log "guest-get-host-name: $reply"
    log "smoke: OK"
}

main() {
    local cmd=${1:-}
    case $cmd in
    build) cmd_build ;;
    path) cmd_path ;;
    smoke) cmd_smoke ;;
    help | -h | --help) usage ;;
    *)
        usage >&2
        return 2
        ;;
    esac
}

main "$@"
