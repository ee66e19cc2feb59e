#!/usr/bin/env bash
# lab.sh - a lab of N libvirt "hosts" on this one machine, beside the system libvirtd,
# for the fleet tests (placement, live migration, HA restart with disk locks).
#
# The story
# ---------
# A fleet needs several hypervisors, and a test machine has one. Each lab host is a
# libvirtd of its own in a private mount namespace, under `tini -s` (QEMU daemonizes:
# without a subreaper its zombies make every destroy slow). Inside the namespace the
# host's own directories are bind-mounted over libvirt's fixed paths:
#
#   H/etc/libvirt   -> /etc/libvirt        written fresh here (never a copy of the
#                                          system's: that would bring its guests along)
#   H/run/libvirt   -> /run/libvirt        sockets and pid files of this host's daemons
#   H/lib/libvirt   -> /var/lib/libvirt    (so /var/lib/libvirt/images is per host)
#   H/log/libvirt   -> /var/log/libvirt
#   H/cache/libvirt -> /var/cache/libvirt  (QEMU capabilities: probed once per host)
#
# with H = $LAB_DIR/hosts/labI. Each host runs virtlogd, virtlockd and libvirtd with
# pid files in its own /run/libvirt; it has its own host_uuid and its own range of
# migration ports (the hosts share one network namespace). $LAB_DIR/shared is the
# "shared storage": every host sees it at the same path, and its lockspace/ directory
# holds the disk leases of every host's virtlockd (qemu.conf lock_manager = "lockd"),
# so two hosts can never run the same disk at once.
#
# Each guest's QEMU stays in its host's namespace (qemu.conf namespaces = []), so every
# process of a lab host is found through the host's pid files and namespace.
#
# Clients reach a host at qemu+unix:///system?socket=H/run/libvirt/libvirt-sock; the
# env file $LAB_DIR/env lists them. Nothing here touches the system libvirtd, OVS or
# etcd: `down` stops only processes in a lab host's own mount namespace, found through
# the lab's own pid files. Facts behind all this: /work/shared/REAL-STACK.md.
#
# Usage: scripts/lab.sh up|down|status [N]   (as root; N defaults to 3)
#
#   up      start every host that does not answer (one that answers is left alone),
#           write $LAB_DIR/env; idempotent
#   down    destroy the lab hosts' running guests, stop their daemons; keeps the
#           hosts' configuration, definitions and caches for the next `up`
#   status  one line per host; exit 0 iff all N answer
#
# Environment:
#   KVMREC_LAB_DIR      root of the lab (default /var/lib/kvmrec-lab)
#   KVMREC_LAB_TIMEOUT  seconds to wait for a libvirtd (default 90: a first start
#                       probes QEMU's capabilities)

set -euo pipefail

LAB_DIR=$(realpath -m -- "${KVMREC_LAB_DIR:-/var/lib/kvmrec-lab}")
HOSTS_DIR=$LAB_DIR/hosts
SHARED_DIR=$LAB_DIR/shared
LOCKSPACE_DIR=$SHARED_DIR/lockspace
ENV_FILE=$LAB_DIR/env
TIMEOUT=${KVMREC_LAB_TIMEOUT:-90}
STOP_TIMEOUT=20
# Migration ports of host I: MIGRATION_BASE + (I-1)*MIGRATION_SPAN, SPAN ports each;
# above the system libvirtd's default range (49152-49215).
MIGRATION_BASE=49300
MIGRATION_SPAN=32
DAEMON_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# host dir name -> the path it is mounted over inside the host's namespace
MOUNTS=(etc:/etc/libvirt run:/run/libvirt lib:/var/lib/libvirt log:/var/log/libvirt cache:/var/cache/libvirt)

log() { printf 'lab: %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}
now_ms() { date +%s%3N; }

usage() {
    cat <<EOF
usage: $(basename -- "$0") up|down|status [N]   (run as root; N hosts, default 3)

  up      start the lab hosts lab1..labN that do not answer; write $ENV_FILE
  down    destroy the lab's running guests and stop the lab's daemons
  status  show whether each lab host answers; exit 0 iff all do

lab dir: $LAB_DIR (set KVMREC_LAB_DIR to change)
EOF
}

host_dir() { printf '%s/%s\n' "$HOSTS_DIR" "$1"; }
host_uri() { printf 'qemu+unix:///system?socket=%s/run/libvirt/libvirt-sock\n' "$(host_dir "$1")"; }

is_alive() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "${state:0:1}" != Z ]
}

mnt_ns() { readlink "/proc/$1/ns/mnt" 2>/dev/null; }

# host_tini HOST: the pid of the host's tini, if it runs and is the one recorded.
host_tini() {
    local dir pid
    dir=$(host_dir "$1")
    [ -f "$dir/tini.pid" ] || return 1
    pid=$(<"$dir/tini.pid")
    [[ $pid =~ ^[0-9]+$ ]] && is_alive "$pid" || return 1
    [ "$(mnt_ns "$pid")" = "$(cat "$dir/mntns" 2>/dev/null)" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q tini || return 1
    printf '%s\n' "$pid"
}

# host_pids HOST: the live processes named by the host's own pid files (its daemons and
# its guests' QEMUs) that run in the host's mount namespace (a guard against pid reuse).
host_pids() {
    local dir ns file pid
    dir=$(host_dir "$1")
    ns=$(cat "$dir/mntns" 2>/dev/null) || return 0
    [ -n "$ns" ] || return 0
    for file in "$dir"/run/libvirt/*.pid "$dir"/run/libvirt/qemu/*.pid; do
        [ -f "$file" ] || continue
        pid=$(tr -dc '0-9' <"$file" 2>/dev/null || true)
        if [ -n "$pid" ] && is_alive "$pid" && [ "$(mnt_ns "$pid")" = "$ns" ]; then
            printf '%s\n' "$pid"
        fi
    done
    return 0
}

answers() { { timeout 10 virsh -c "$(host_uri "$1")" uri; } >/dev/null 2>&1; }

write_config() {
    local name=$1 index=$2 dir etc uuid min max
    dir=$(host_dir "$name")
    etc=$dir/etc/libvirt
    mkdir -p "$etc/qemu" "$etc/qemu/networks" "$dir/run/libvirt" "$dir/lib/libvirt/images" \
        "$dir/log/libvirt" "$dir/cache/libvirt"
    # The host's identity survives down/up: a new uuid would be a new host.
    [ -s "$dir/host-uuid" ] || cat /proc/sys/kernel/random/uuid >"$dir/host-uuid"
    uuid=$(<"$dir/host-uuid")
    min=$((MIGRATION_BASE + (index - 1) * MIGRATION_SPAN))
    max=$((min + MIGRATION_SPAN - 1))
    cat >"$etc/libvirtd.conf" <<EOF
# lab host $name (scripts/lab.sh): its own identity and log
host_uuid = "$uuid"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
    cat >"$etc/qemu.conf" <<EOF
# lab host $name (scripts/lab.sh): /dev/kvm is 0600 root and the kernel has no
# AppArmor/SELinux; migration ports of its own (the hosts share one network
# namespace); disk leases on the lab's shared storage. No mount namespace per QEMU:
# a host's guests live in the host's own, where lab.sh finds them.
user = "root"
group = "root"
security_driver = "none"
namespaces = []
migration_port_min = $min
migration_port_max = $max
lock_manager = "lockd"
EOF
    cat >"$etc/qemu-lockd.conf" <<EOF
# lab host $name (scripts/lab.sh): leases in the directory every lab host shares
file_lockspace_dir = "$LOCKSPACE_DIR"
EOF
    : >"$etc/virtlogd.conf"
    : >"$etc/virtlockd.conf"
}

# The script run inside the host's new mount namespace, under tini: mount the host's
# directories, start its virtlogd and virtlockd, then become its libvirtd.
# Arguments: HOST_DIR then DIR:TARGET pairs.
# shellcheck disable=SC2016
NAMESPACE_INIT='
set -e
dir=$1
shift
for pair in "$@"; do
    mount --bind "$dir/${pair%%:*}/libvirt" "${pair#*:}"
done
rm -f /run/libvirt/*.pid
virtlogd -d -p /run/libvirt/virtlogd.pid
virtlockd -d -p /run/libvirt/virtlockd.pid
exec libvirtd -p /run/libvirt/libvirtd.pid
'

start_host() {
    local name=$1 index=$2 dir pid deadline t0
    t0=$(now_ms)
    dir=$(host_dir "$name")
    write_config "$name" "$index"
    # A previous run's daemons or guests left in the namespace (tini killed by hand):
    # never two of this host's daemons at once.
    stop_host "$name" quiet
    rm -f "$dir/run/libvirt/"*.pid "$dir/run/libvirt/"*sock* 2>/dev/null || true
    printf '\n==== %s lab.sh: starting %s\n' "$(date -Is)" "$name" >>"$dir/daemon.log"
    setsid env PATH="$DAEMON_PATH" \
        unshare --mount --propagation private -- \
        tini -s -- sh -c "$NAMESPACE_INIT" lab-init "$dir" "${MOUNTS[@]}" \
        </dev/null >>"$dir/daemon.log" 2>&1 9>&- &
    pid=$!
    # In a script without job control the background child leads no process group, so
    # setsid does not fork and unshare execs tini: $! is tini's pid.
    printf '%s\n' "$pid" >"$dir/tini.pid"
    deadline=$((SECONDS + 5))
    until [ "$(mnt_ns "$pid")" != "$(mnt_ns $$)" ]; do
        is_alive "$pid" || die "$name: exited at once; see $dir/daemon.log"
        [ "$SECONDS" -lt "$deadline" ] || die "$name: no mount namespace of its own after 5 s"
        sleep 0.05
    done
    mnt_ns "$pid" >"$dir/mntns"
    deadline=$((SECONDS + TIMEOUT))
    until answers "$name"; do
        if ! is_alive "$pid"; then
            tail -n 20 "$dir/daemon.log" "$dir/log/libvirt/libvirtd.log" 2>/dev/null | sed 's/^/    /' >&2
            die "$name: libvirtd exited during startup; see $dir/daemon.log and $dir/log/libvirt/libvirtd.log"
        fi
        [ "$SECONDS" -lt "$deadline" ] || die "$name: libvirtd did not answer within ${TIMEOUT}s; see $dir/log/libvirt/libvirtd.log"
        sleep 0.1
    done
    log "$name: up in $(($(now_ms) - t0)) ms (tini pid $pid)"
}

# destroy_guests HOST: destroy the host's running guests (all of them: the lab is ours).
destroy_guests() {
    local uri name
    uri=$(host_uri "$1")
    answers "$1" || return 0
    timeout 30 virsh -c "$uri" list --name 2>/dev/null | while IFS= read -r name; do
        [ -n "$name" ] || continue
        log "$1: destroying guest $name"
        timeout 60 virsh -q -c "$uri" destroy -- "$name" >/dev/null 2>&1 || log "$1: destroy $name failed"
    done
    return 0
}

# wait_gone TIMEOUT PID...: wait until none of the PIDs is alive.
wait_gone() {
    local timeout=$1 deadline pid alive
    shift
    deadline=$((SECONDS + timeout))
    while :; do
        alive=false
        for pid in "$@"; do
            if is_alive "$pid"; then alive=true; fi
        done
        $alive || return 0
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

# stop_host HOST [quiet]: SIGTERM libvirtd (through tini), then the host's other
# processes (virtlogd, virtlockd, QEMU leftovers); SIGKILL what ignores it.
stop_host() {
    local name=$1 quiet=${2:-} tini pids=()
    if tini=$(host_tini "$name"); then
        [ -n "$quiet" ] || log "$name: stopping (tini pid $tini)"
        kill -TERM "$tini" 2>/dev/null || true
        wait_gone "$STOP_TIMEOUT" "$tini" || kill -KILL "$tini" 2>/dev/null || true
    fi
    mapfile -t pids < <(host_pids "$name" | sort -un)
    if [ "${#pids[@]}" -gt 0 ]; then
        log "$name: stopping its daemons and guests left running: ${pids[*]}"
        kill -TERM "${pids[@]}" 2>/dev/null || true
        if ! wait_gone "$STOP_TIMEOUT" "${pids[@]}"; then
            kill -KILL "${pids[@]}" 2>/dev/null || true
            wait_gone 5 "${pids[@]}" || die "$name: processes ${pids[*]} would not die"
        fi
    fi
    rm -f "$(host_dir "$name")/tini.pid" "$(host_dir "$name")/mntns"
}

write_env_file() {
    local count=$1 i names=() tmp
    for ((i = 1; i <= count; i++)); do names+=("lab$i"); done
    tmp=$ENV_FILE.tmp.$$
    {
        printf '# the kvmrec lab (scripts/lab.sh): hosts and their libvirt URIs\n'
        printf "KVMREC_LAB_DIR='%s'\n" "$LAB_DIR"
        printf "KVMREC_LAB_SHARED='%s'\n" "$SHARED_DIR"
        printf "KVMREC_LAB_HOSTS='%s'\n" "${names[*]}"
        for ((i = 1; i <= count; i++)); do
            printf "KVMREC_LAB_LAB%d_URI='%s'\n" "$i" "$(host_uri "lab$i")"
            printf "KVMREC_LAB_LAB%d_MIGRATION_PORTS='%d-%d'\n" "$i" \
                $((MIGRATION_BASE + (i - 1) * MIGRATION_SPAN)) $((MIGRATION_BASE + i * MIGRATION_SPAN - 1))
        done
    } >"$tmp"
    mv -f -- "$tmp" "$ENV_FILE"
}

ensure_libvirt_qemu_user() {
    # The QEMU driver refuses to load without this user, even when qemu.conf
    # overrides user/group.
    getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
    getent passwd libvirt-qemu >/dev/null ||
        useradd --system -g libvirt-qemu -d /var/lib/libvirt -M -s /usr/sbin/nologin libvirt-qemu
}

check_lab_dir() {
    local pair target
    for pair in "${MOUNTS[@]}"; do
        target=${pair#*:}
        case $LAB_DIR/ in
        "$target"/*) die "KVMREC_LAB_DIR=$LAB_DIR is under $target, which every lab host mounts over" ;;
        esac
    done
}

lock_lab() {
    mkdir -p "$LAB_DIR"
    exec 9>"$LAB_DIR/.lock"
    flock -w 300 9 || die "another lab.sh up/down holds $LAB_DIR/.lock"
}

# Hosts recorded in the lab dir beyond N (a previous `up` with a larger N).
known_hosts() {
    local count=$1 dir
    for ((i = 1; i <= count; i++)); do printf 'lab%d\n' "$i"; done
    for dir in "$HOSTS_DIR"/lab*; do
        [ -f "$dir/tini.pid" ] && basename "$dir"
    done
    return 0
}

cmd_up() {
    local count=$1 i t0 missing="" cmd pids=() pid rc=0 pair
    t0=$(now_ms)
    for cmd in libvirtd virtlogd virtlockd tini unshare virsh; do
        command -v "$cmd" >/dev/null || missing+=" $cmd"
    done
    [ -z "$missing" ] || die "missing:$missing (run: make stack-up, or bash scripts/real-stack.sh packages)"
    ensure_libvirt_qemu_user
    mkdir -p "$HOSTS_DIR" "$LOCKSPACE_DIR"
    # The paths every host mounts over must exist (a minimal image may lack /var/log/libvirt).
    for pair in "${MOUNTS[@]}"; do mkdir -p "${pair#*:}"; done
    for ((i = 1; i <= count; i++)); do
        if answers "lab$i"; then
            log "lab$i: answers (left alone)"
        else
            # In parallel: a cold start is mostly QEMU capability probing.
            start_host "lab$i" "$i" &
            pids+=($!)
        fi
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || rc=$?
    done
    for ((i = 1; i <= count; i++)); do
        answers "lab$i" || die "lab$i does not answer; see $(host_dir "lab$i")/daemon.log"
    done
    [ "$rc" -eq 0 ] || die "a host failed to start"
    write_env_file "$count"
    log "up: $count hosts in $(($(now_ms) - t0)) ms; env file $ENV_FILE"
}

cmd_down() {
    local count=$1 t0 name
    t0=$(now_ms)
    for name in $(known_hosts "$count" | sort -u); do
        destroy_guests "$name"
        stop_host "$name"
    done
    log "down: done in $(($(now_ms) - t0)) ms"
}

host_rss_kb() {
    local pid total=0 rss
    for pid in $(host_pids "$1" | sort -un); do
        rss=$(ps -o rss= -p "$pid" 2>/dev/null | tr -d ' ') || continue
        total=$((total + ${rss:-0}))
    done
    printf '%s\n' "$total"
}

cmd_status() {
    local count=$1 i name state rc=0 tini guests
    for ((i = 1; i <= count; i++)); do
        name=lab$i
        if answers "$name"; then
            state=answers
            guests=$(timeout 10 virsh -c "$(host_uri "$name")" list --name 2>/dev/null | grep -c . || true)
        else
            state=DOWN
            guests=-
            rc=1
        fi
        tini=$(host_tini "$name" || echo -)
        printf '%-6s %-8s tini=%-8s guests=%-3s rss=%sMiB  %s\n' "$name" "$state" "$tini" "$guests" \
            $(($(host_rss_kb "$name") / 1024)) "$(host_uri "$name")"
    done
    printf 'shared: %s\nenv file: %s\n' "$SHARED_DIR" "$ENV_FILE"
    return "$rc"
}

main() {
    local cmd=${1:-} count=${2:-3}
    case $cmd in
    up | down | status) ;;
    help | -h | --help)
        usage
        return 0
        ;;
    *)
        usage >&2
        return 2
        ;;
    esac
    [[ $count =~ ^[1-9][0-9]?$ ]] || die "N must be a number of hosts from 1 to 99, not '$count'"
    [ "$(id -u)" -eq 0 ] || die "must run as root (the lab needs /dev/kvm and mount namespaces)"
    check_lab_dir
    case $cmd in
    up)
        lock_lab
        cmd_up "$count"
        ;;
    down)
        lock_lab
        cmd_down "$count"
        ;;
    status) cmd_status "$count" ;;
    esac
}

main "$@"
