#!/usr/bin/env bash
# real-stack.sh - bring the real kvmrec stack (libvirtd + QEMU/KVM, Open vSwitch,
# etcd) up or down on this machine, and report whether it answers.
#
# The story
# ---------
# kvmrec reconciles KVM hosts through libvirt (qemu:///system) and Open vSwitch
# (OVSDB), and shares state between hosts through etcd. Unit tests use libvirt's
# in-memory test driver, but the integration tests and `make run` need the real
# daemons. CI and developer machines start fresh: Debian 12, root, and no systemd
# as PID 1, so no service manager starts anything for us. This script installs the
# Debian packages and starts the daemons by hand, in dependency order:
#
#   virtlogd -> libvirtd (under `tini -s`) -> ovsdb-server -> ovs-vswitchd -> etcd
#
# An operator's hypervisor is not a test machine: there libvirtd and OVS already
# run (under systemd) with their own configuration. The script therefore starts a
# daemon ONLY when none answers, uses running ones exactly as they are, and writes
# /etc/libvirt/qemu.conf (user/group root, no security driver: /dev/kvm is 0600
# root here and the kernel has no AppArmor/SELinux) ONLY for a libvirtd it starts
# itself on a machine without systemd as PID 1. Every daemon it starts is recorded
# in a pid file under the state dir, and `down` stops only those.
#
# libvirtd runs under `tini -s` (a child subreaper): QEMU and dnsmasq daemonize,
# and without a subreaper their zombies are reaped slowly by PID 1, which makes
# every virDomainDestroy take 1-2 s instead of 0.2 s.
#
# Open vSwitch on these kernels has no kernel datapath, so bridges must use
# datapath_type=netdev; real hosts use `system`. The script detects which one
# applies, and whether /dev/kvm gives <domain type='kvm'> or only TCG ('qemu'),
# and writes both into an env file that make can `include` and shell/Python read:
#
#   LIBVIRT_DEFAULT_URI=qemu:///system
#   KVMREC_DOMAIN_TYPE=kvm|qemu
#   KVMREC_OVS_DATAPATH=system|netdev
#   KVMREC_OVSDB=unix:/run/openvswitch/db.sock
#   KVMREC_ETCD=http://127.0.0.1:2379
#
# Usage: scripts/real-stack.sh up|down|status|help   (as root)
#
#   up      install missing packages, start what does not answer, write env file
#   down    destroy guests/networks (all of them if this script started libvirtd,
#           otherwise only those named kvmrec-test-* or kt-*), then stop the
#           daemons this script started and make sure no QEMU/dnsmasq is left
#   status  print each daemon and whether it answers; exit 0 iff all answer
#   packages  only install the missing Debian packages (what building the venv needs)
#
# Both `up` and `down` are idempotent.
#
# Environment:
#   KVMREC_STACK_DIR            state dir (default: <repo>/.stack): pids/, log/,
#                               etcd data, OVS database, env file
#   KVMREC_STACK_ENV            env file path (default: $KVMREC_STACK_DIR/env)
#   KVMREC_STACK_DOMAIN_TYPE    force kvm|qemu instead of detecting it
#   KVMREC_STACK_OVS_DATAPATH   force system|netdev instead of detecting it
#   KVMREC_STACK_TIMEOUT        seconds to wait for libvirtd (default 60; the
#                               first start probes QEMU capabilities)
#   KVMREC_STACK_DAEMON_TIMEOUT seconds to wait for the other daemons (default 20)
#
# Facts behind all this: /work/shared/REAL-STACK.md.

set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd -- "$SCRIPT_DIR/.." && pwd)
# Absolute paths: the OVS daemons chdir to / when they detach.
STACK_DIR=$(realpath -m -- "${KVMREC_STACK_DIR:-$REPO_DIR/.stack}")
ENV_FILE=$(realpath -m -- "${KVMREC_STACK_ENV:-$STACK_DIR/env}")
PID_DIR=$STACK_DIR/pids
LOG_DIR=$STACK_DIR/log
ETCD_DATA=$STACK_DIR/etcd
OVS_DB=$STACK_DIR/ovs/conf.db
OVS_SCHEMA=/usr/share/openvswitch/vswitch.ovsschema
OVS_RUN=/run/openvswitch
OVSDB_SOCK=$OVS_RUN/db.sock
OVSDB=unix:$OVSDB_SOCK
LIBVIRT_URI=qemu:///system
ETCD_URL=http://127.0.0.1:2379
ETCD_PEER_URL=http://127.0.0.1:2380
ETCD_NAME=kvmrec-stack
QEMU_CONF=/etc/libvirt/qemu.conf
POLICY_RC_D=/usr/sbin/policy-rc.d
LIBVIRTD_TIMEOUT=${KVMREC_STACK_TIMEOUT:-60}
DAEMON_TIMEOUT=${KVMREC_STACK_DAEMON_TIMEOUT:-20}
STOP_TIMEOUT=30
# A clean PATH for the daemons: libvirtd runs ovs-vsctl, dnsmasq, iptables, qemu.
DAEMON_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
TEST_PREFIXES=(kvmrec-test- kt-)
PACKAGES=(
    libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev
    pkg-config qemu-system-x86 qemu-utils openvswitch-switch etcd-server
    dnsmasq-base iptables tini curl ovmf osinfo-db python3-venv python3-dev
)
# Daemons in start order; `down` stops the reverse of this.
DAEMONS=(virtlogd libvirtd ovsdb-server ovs-vswitchd etcd)

POLICY_RC_D_CREATED=false
STEP_T0=0 # start time (ms) of the daemon being started, for the timing log

log() { printf 'real-stack: %s\n' "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

usage() {
    cat <<EOF
usage: $(basename -- "$0") up|down|status|packages|help   (run as root)

  up      install missing Debian packages, start the daemons that do not answer
          (virtlogd, libvirtd under tini, ovsdb-server, ovs-vswitchd, etcd),
          detect domain type and OVS datapath, write $ENV_FILE
  down    destroy running guests and active networks (all if this script started
          libvirtd, else only kvmrec-test-*/kt-*), stop the daemons this script
          started, and kill QEMU/dnsmasq leftovers of its own libvirtd
  status  show whether each daemon answers; exit 0 iff all of them do
  packages  only install the missing Debian packages

state dir: $STACK_DIR (set KVMREC_STACK_DIR to change)
EOF
}

require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        log "ERROR: must run as root (the stack needs /dev/kvm, /run, /etc/libvirt and apt); try: sudo $0 ${1:-}"
        exit 1
    fi
}

now_ms() { date +%s%3N; }

# ---------------------------------------------------------------- processes

# is_alive PID: the process exists and is not a zombie.
is_alive() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "${state:0:1}" != Z ]
}

# cmdline_has PID WORD: PID's command line mentions WORD (guards pid reuse).
cmdline_has() {
    local cmd
    cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
    [[ $cmd == *"$2"* ]]
}

pid_file() { printf '%s/%s.pid\n' "$PID_DIR" "$1"; }

# record_pid NAME PID: remember that this script started daemon NAME as PID.
record_pid() {
    mkdir -p "$PID_DIR"
    printf '%s\n' "$2" >"$(pid_file "$1")"
}

# owned_pid NAME: print the pid of daemon NAME if this script started it and it
# still runs; drop a stale record otherwise.
owned_pid() {
    local file pid
    file=$(pid_file "$1")
    [ -f "$file" ] || return 1
    pid=$(<"$file")
    if [[ $pid =~ ^[0-9]+$ ]] && is_alive "$pid" && cmdline_has "$pid" "$1"; then
        printf '%s\n' "$pid"
        return 0
    fi
    rm -f "$file"
    return 1
}

# read_pidfile FILE: print the pid stored in a daemon's own pid file.
read_pidfile() {
    local pid
    [ -r "$1" ] || return 1
    pid=$(tr -dc '0-9' <"$1")
    [ -n "$pid" ] && is_alive "$pid" && printf '%s\n' "$pid"
}

children_of() { ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' || true; }

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

# terminate TIMEOUT PID...: SIGTERM, wait, then SIGKILL what is left.
terminate() {
    local timeout=$1 pid
    shift
    [ "$#" -gt 0 ] || return 0
    kill -TERM "$@" 2>/dev/null || true
    if ! wait_gone "$timeout" "$@"; then
        for pid in "$@"; do
            if is_alive "$pid"; then
                log "pid $pid ignored SIGTERM for ${timeout}s: SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        done
        wait_gone 5 "$@" || return 1
    fi
}

# ------------------------------------------------------------------ probes

answers_virtlogd() {
    if { timeout 10 virt-admin -c virtlogd:///system version; } >/dev/null 2>&1; then
        return 0
    fi
    # A systemd host may socket-activate virtlogd without its admin socket;
    # there a listening socket file is enough.
    systemd_is_init && [ -S /run/libvirt/virtlogd-sock ]
}
# The probes run inside { } with stderr redirected, so that bash's own report of
# a probe killed by its timeout ("Alarm clock") does not reach the terminal.
answers_libvirtd() { { timeout 10 virsh -c "$LIBVIRT_URI" uri; } >/dev/null 2>&1; }
answers_ovsdb() { { timeout 10 ovs-vsctl --db="$OVSDB" --timeout=5 show; } >/dev/null 2>&1; }
answers_vswitchd() { { timeout 10 ovs-appctl --timeout=5 -t ovs-vswitchd version; } >/dev/null 2>&1; }
answers_etcd() {
    local body
    body=$({ curl -fsS --max-time 3 "$ETCD_URL/health"; } 2>/dev/null) || return 1
    [[ $body == *'"health":"true"'* ]]
}

answers() {
    case $1 in
    virtlogd) answers_virtlogd ;;
    libvirtd) answers_libvirtd ;;
    ovsdb-server) answers_ovsdb ;;
    ovs-vswitchd) answers_vswitchd ;;
    etcd) answers_etcd ;;
    *) return 1 ;;
    esac
}

probe_text() {
    case $1 in
    virtlogd) echo "virt-admin -c virtlogd:///system version" ;;
    libvirtd) echo "virsh -c $LIBVIRT_URI uri" ;;
    ovsdb-server) echo "ovs-vsctl --db=$OVSDB --timeout=5 show" ;;
    ovs-vswitchd) echo "ovs-appctl -t ovs-vswitchd version" ;;
    etcd) echo "curl $ETCD_URL/health" ;;
    esac
}

# wait_for NAME TIMEOUT LOGFILE [PID]: poll until NAME answers; fail with the
# daemon's name and log if it does not (or if PID dies first).
wait_for() {
    local name=$1 timeout=$2 logfile=$3 pid=${4:-} deadline
    deadline=$((SECONDS + timeout))
    until answers "$name"; do
        if [ -n "$pid" ] && ! is_alive "$pid"; then
            show_log_tail "$logfile"
            die "$name (pid $pid) exited during startup; see $logfile"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            show_log_tail "$logfile"
            die "$name did not answer '$(probe_text "$name")' within ${timeout}s; see $logfile"
        fi
        sleep 0.2
    done
    log "$name: answers after $(($(now_ms) - STEP_T0)) ms"
}

show_log_tail() {
    if [ -s "$1" ]; then
        log "last lines of $1:"
        tail -n 20 -- "$1" | sed 's/^/    /' >&2
    fi
}

# ---------------------------------------------------------------- packages

cleanup_policy_rc_d() {
    if $POLICY_RC_D_CREATED; then
        rm -f "$POLICY_RC_D"
        POLICY_RC_D_CREATED=false
    fi
}

install_packages() {
    local pkg status missing=()
    for pkg in "${PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
        [[ $status == ii* ]] || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    log "installing: ${missing[*]}"
    # Keep maintainer scripts from starting services (there is no init to ask,
    # and a host's own services must not be restarted). Leave a pre-existing
    # policy-rc.d alone.
    if [ ! -e "$POLICY_RC_D" ]; then
        trap cleanup_policy_rc_d EXIT
        trap 'exit 130' INT TERM
        printf '#!/bin/sh\n# temporary, written by kvmrec scripts/real-stack.sh\nexit 101\n' >"$POLICY_RC_D"
        chmod 0755 "$POLICY_RC_D"
        POLICY_RC_D_CREATED=true
    fi
    export DEBIAN_FRONTEND=noninteractive
    mkdir -p "$LOG_DIR"  # `packages` alone (make venv, lab-up) runs before any `up`
    apt-get update -qq || die "apt-get update failed"
    # Never libvirt-daemon-system: it pulls in systemd-sysv.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$LOG_DIR/apt.log" 2>&1 || {
        show_log_tail "$LOG_DIR/apt.log"
        die "apt-get install ${missing[*]} failed; see $LOG_DIR/apt.log"
    }
    cleanup_policy_rc_d
    trap - EXIT INT TERM
}

ensure_libvirt_qemu_user() {
    # The QEMU driver refuses to load without this user, even when qemu.conf
    # overrides user/group.
    if ! getent group libvirt-qemu >/dev/null; then
        groupadd --system libvirt-qemu
    fi
    if ! getent passwd libvirt-qemu >/dev/null; then
        useradd --system -g libvirt-qemu -d /var/lib/libvirt -M -s /usr/sbin/nologin libvirt-qemu
    fi
}

# ----------------------------------------------------------------- daemons

systemd_is_init() { [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; }

write_qemu_conf() {
    local desired backup
    desired='# Written by kvmrec scripts/real-stack.sh for a libvirtd it starts itself
# on a test machine without systemd: /dev/kvm is 0600 root and the kernel has
# no AppArmor/SELinux.
user = "root"
group = "root"
security_driver = "none"
'
    if [ -f "$QEMU_CONF" ] && [ "$(cat "$QEMU_CONF")" = "${desired%$'\n'}" ]; then
        return 0
    fi
    mkdir -p "$(dirname "$QEMU_CONF")"
    if [ -e "$QEMU_CONF" ]; then
        backup=$QEMU_CONF.kvmrec-backup.$(date +%Y%m%d%H%M%S)
        cp -p -- "$QEMU_CONF" "$backup"
        log "saved previous $QEMU_CONF as $backup"
    fi
    printf '%s' "$desired" >"$QEMU_CONF.tmp.$$"
    mv -f -- "$QEMU_CONF.tmp.$$" "$QEMU_CONF"
    log "wrote $QEMU_CONF (user/group root, security_driver none)"
}

# note_running NAME: say whether a daemon that answers is ours or the host's.
note_running() {
    local pid
    if pid=$(owned_pid "$1"); then
        log "$1: answers (started by this script, pid $pid)"
    else
        log "$1: answers (not started by this script; used as it is)"
    fi
}

start_virtlogd() {
    local logfile=$LOG_DIR/virtlogd.log pid
    STEP_T0=$(now_ms)
    log "virtlogd: starting"
    env PATH="$DAEMON_PATH" LIBVIRT_LOG_OUTPUTS="3:file:$logfile" virtlogd -d 9>&- ||
        die "virtlogd -d failed; see $logfile"
    wait_for virtlogd "$DAEMON_TIMEOUT" "$logfile"
    pid=$(read_pidfile /run/virtlogd.pid) || die "virtlogd answers but /run/virtlogd.pid names no live process"
    record_pid virtlogd "$pid"
}

start_libvirtd() {
    local logfile=$LOG_DIR/libvirtd.log pid lv ppid
    STEP_T0=$(now_ms)
    if systemd_is_init; then
        log "libvirtd: not running, and systemd is PID 1: starting it by hand WITHOUT touching $QEMU_CONF"
    else
        write_qemu_conf
    fi
    log "libvirtd: starting under tini -s (log: $logfile; first start probes QEMU, up to ${LIBVIRTD_TIMEOUT}s)"
    printf '\n==== %s real-stack.sh: starting libvirtd\n' "$(date -Is)" >>"$logfile"
    # setsid: own session, so the caller's Ctrl-C or exit does not reach it.
    # In a script without job control the background child is no process group
    # leader, so setsid does not fork and $! is tini's pid.
    setsid env PATH="$DAEMON_PATH" LIBVIRT_LOG_OUTPUTS="3:stderr" \
        tini -s -- libvirtd </dev/null >>"$logfile" 2>&1 9>&- &
    pid=$!
    record_pid libvirtd "$pid" # at once, so `down` finds it even if we fail below
    wait_for libvirtd "$LIBVIRTD_TIMEOUT" "$logfile" "$pid"
    # Record the tini that supervises libvirtd (robust even if setsid forked).
    if lv=$(read_pidfile /run/libvirtd.pid); then
        ppid=$(ps -o ppid= -p "$lv" | tr -d ' ')
        if [ -n "$ppid" ] && cmdline_has "$ppid" tini; then
            pid=$ppid
        fi
    fi
    record_pid libvirtd "$pid"
}

start_ovsdb() {
    local logfile=$LOG_DIR/ovsdb-server.log pid
    STEP_T0=$(now_ms)
    mkdir -p "$OVS_RUN" "$(dirname "$OVS_DB")"
    if [ ! -s "$OVS_DB" ]; then
        ovsdb-tool create "$OVS_DB" "$OVS_SCHEMA"
    elif [ "$(ovsdb-tool needs-conversion "$OVS_DB" "$OVS_SCHEMA")" = yes ]; then
        ovsdb-tool convert "$OVS_DB" "$OVS_SCHEMA"
    fi
    log "ovsdb-server: starting (db: $OVS_DB, socket: $OVSDB_SOCK)"
    ovsdb-server "$OVS_DB" \
        --remote="punix:$OVSDB_SOCK" \
        --remote=db:Open_vSwitch,Open_vSwitch,manager_options \
        --pidfile --detach --log-file="$logfile" -vconsole:off 2>>"$logfile" 9>&- ||
        {
            show_log_tail "$logfile"
            die "ovsdb-server failed to start; see $logfile"
        }
    pid=$(read_pidfile "$OVS_RUN/ovsdb-server.pid") || die "ovsdb-server: no live pid in $OVS_RUN/ovsdb-server.pid; see $logfile"
    record_pid ovsdb-server "$pid"
    # Create the root Open_vSwitch row first: `ovs-vsctl show` on a fresh
    # database waits for it until its timeout.
    { timeout "$DAEMON_TIMEOUT" ovs-vsctl --db="$OVSDB" --timeout="$DAEMON_TIMEOUT" --no-wait init; } 2>>"$logfile" ||
        die "ovs-vsctl --no-wait init failed; see $logfile"
    wait_for ovsdb-server "$DAEMON_TIMEOUT" "$logfile" "$pid"
}

start_vswitchd() {
    local logfile=$LOG_DIR/ovs-vswitchd.log pid
    STEP_T0=$(now_ms)
    log "ovs-vswitchd: starting"
    ovs-vswitchd "$OVSDB" --pidfile --detach --log-file="$logfile" -vconsole:off 2>>"$logfile" 9>&- ||
        {
            show_log_tail "$logfile"
            die "ovs-vswitchd failed to start; see $logfile"
        }
    pid=$(read_pidfile "$OVS_RUN/ovs-vswitchd.pid") || die "ovs-vswitchd: no live pid in $OVS_RUN/ovs-vswitchd.pid; see $logfile"
    record_pid ovs-vswitchd "$pid"
    wait_for ovs-vswitchd "$DAEMON_TIMEOUT" "$logfile" "$pid"
}

start_etcd() {
    local logfile=$LOG_DIR/etcd.log pid
    STEP_T0=$(now_ms)
    mkdir -p "$ETCD_DATA"
    chmod 0700 "$ETCD_DATA"
    log "etcd: starting on $ETCD_URL (data: $ETCD_DATA)"
    printf '\n==== %s real-stack.sh: starting etcd\n' "$(date -Is)" >>"$logfile"
    setsid env PATH="$DAEMON_PATH" etcd \
        --name "$ETCD_NAME" \
        --data-dir "$ETCD_DATA/data" \
        --listen-client-urls "$ETCD_URL" \
        --advertise-client-urls "$ETCD_URL" \
        --listen-peer-urls "$ETCD_PEER_URL" \
        --initial-advertise-peer-urls "$ETCD_PEER_URL" \
        --initial-cluster "$ETCD_NAME=$ETCD_PEER_URL" \
        --initial-cluster-state new \
        </dev/null >>"$logfile" 2>&1 9>&- &
    pid=$!
    record_pid etcd "$pid"
    wait_for etcd "$DAEMON_TIMEOUT" "$logfile" "$pid"
}

# ---------------------------------------------------------------- detection

detect_domain_type() {
    local caps
    if [ -n "${KVMREC_STACK_DOMAIN_TYPE:-}" ]; then
        printf '%s\n' "$KVMREC_STACK_DOMAIN_TYPE"
        return 0
    fi
    caps=$(timeout "$LIBVIRTD_TIMEOUT" virsh -c "$LIBVIRT_URI" capabilities) ||
        die "virsh -c $LIBVIRT_URI capabilities failed"
    if grep -q "<domain type='kvm'" <<<"$caps"; then echo kvm; else echo qemu; fi
}

kernel_has_ovs_datapath() {
    [ -d /sys/module/openvswitch ] || ovs-dpctl dump-dps >/dev/null 2>&1
}

# detect_ovs_datapath TRY_MODPROBE: system if the kernel has the openvswitch
# datapath (loading the module only when this script starts ovs-vswitchd itself).
detect_ovs_datapath() {
    if [ -n "${KVMREC_STACK_OVS_DATAPATH:-}" ]; then
        printf '%s\n' "$KVMREC_STACK_OVS_DATAPATH"
        return 0
    fi
    if kernel_has_ovs_datapath; then
        echo system
    elif $1 && modprobe -q openvswitch >/dev/null 2>&1 && kernel_has_ovs_datapath; then
        echo system
    else
        echo netdev
    fi
}

write_env_file() {
    local domain_type=$1 datapath=$2 tmp
    mkdir -p "$(dirname "$ENV_FILE")"
    tmp=$ENV_FILE.tmp.$$
    cat >"$tmp" <<EOF
LIBVIRT_DEFAULT_URI=$LIBVIRT_URI
KVMREC_DOMAIN_TYPE=$domain_type
KVMREC_OVS_DATAPATH=$datapath
KVMREC_OVSDB=$OVSDB
KVMREC_ETCD=$ETCD_URL
EOF
    mv -f -- "$tmp" "$ENV_FILE"
}

# ---------------------------------------------------------------- commands

# Serialize up/down on fd 9. Every daemon is started with 9>&- so that it does
# not inherit (and hold) the lock after this script exits.
lock_stack() {
    mkdir -p "$STACK_DIR" "$PID_DIR" "$LOG_DIR"
    exec 9>"$STACK_DIR/.lock"
    flock -w 300 9 || die "another real-stack.sh up/down holds $STACK_DIR/.lock"
}

cmd_up() {
    local t0 name datapath domain_type vswitchd_ours=false
    t0=$(now_ms)
    lock_stack
    install_packages
    ensure_libvirt_qemu_user

    # libvirt: virtlogd is only ours to start when libvirtd is too.
    if answers libvirtd; then
        note_running libvirtd
        if answers virtlogd; then note_running virtlogd; fi
    else
        if answers virtlogd; then note_running virtlogd; else start_virtlogd; fi
        start_libvirtd
    fi

    if answers ovsdb-server; then note_running ovsdb-server; else start_ovsdb; fi
    if answers ovs-vswitchd; then
        note_running ovs-vswitchd
    else
        vswitchd_ours=true
    fi
    # Detect the datapath before starting ovs-vswitchd, so a loaded module is
    # there from its start.
    datapath=$(detect_ovs_datapath "$vswitchd_ours")
    if $vswitchd_ours; then start_vswitchd; fi

    if answers etcd; then note_running etcd; else start_etcd; fi

    STEP_T0=$(now_ms)
    domain_type=$(detect_domain_type)
    log "domain type: $domain_type (detected in $(($(now_ms) - STEP_T0)) ms); OVS datapath: $datapath"
    write_env_file "$domain_type" "$datapath"

    for name in "${DAEMONS[@]}"; do
        answers "$name" || die "$name stopped answering during startup; see $LOG_DIR/$name.log"
    done
    log "env file $ENV_FILE:"
    sed 's/^/    /' "$ENV_FILE" >&2
    log "up: stack ready in $(($(now_ms) - t0)) ms"
}

has_test_prefix() {
    local prefix
    for prefix in "${TEST_PREFIXES[@]}"; do
        [[ $1 == "$prefix"* ]] && return 0
    done
    return 1
}

# destroy_libvirt_objects ALL: destroy running guests, then active networks.
destroy_libvirt_objects() {
    local all=$1 name names
    names=$(timeout 30 virsh -c "$LIBVIRT_URI" list --name) || {
        log "virsh list failed; skipping guest cleanup"
        names=
    }
    while IFS= read -r name; do
        [ -n "$name" ] || continue
        if $all || has_test_prefix "$name"; then
            log "destroying guest $name"
            timeout 60 virsh -q -c "$LIBVIRT_URI" destroy -- "$name" >/dev/null ||
                log "virsh destroy $name failed"
        fi
    done <<<"$names"
    names=$(timeout 30 virsh -c "$LIBVIRT_URI" net-list --name) || {
        log "virsh net-list failed; skipping network cleanup"
        names=
    }
    while IFS= read -r name; do
        [ -n "$name" ] || continue
        if $all || has_test_prefix "$name"; then
            log "destroying network $name"
            timeout 60 virsh -q -c "$LIBVIRT_URI" net-destroy -- "$name" >/dev/null ||
                log "virsh net-destroy $name failed"
        fi
    done <<<"$names"
}

# qemu_or_dnsmasq PID: PID is a QEMU or dnsmasq process.
qemu_or_dnsmasq() {
    local comm
    comm=$(ps -o comm= -p "$1" 2>/dev/null) || return 1
    [[ $comm == qemu-system* || $comm == qemu-kvm || $comm == dnsmasq ]]
}

# libvirt_helpers [TINI_PID]: QEMU/dnsmasq processes that belong to our
# libvirtd: those in libvirt's pid files and those reparented to our tini
# subreaper.
libvirt_helpers() {
    local tini=${1:-} f pid
    {
        for f in /run/libvirt/qemu/*.pid /run/libvirt/network/*.pid; do
            [ -e "$f" ] || continue
            pid=$(tr -dc '0-9' <"$f" 2>/dev/null || true)
            [ -n "$pid" ] && printf '%s\n' "$pid"
        done
        if [ -n "$tini" ]; then children_of "$tini"; fi
    } | sort -u | while IFS= read -r pid; do
        [ -n "$pid" ] && is_alive "$pid" && qemu_or_dnsmasq "$pid" && printf '%s\n' "$pid"
    done
    return 0
}

stop_owned() {
    local name=$1 pid extra=()
    pid=$(owned_pid "$name") || return 0
    if [ "$name" = libvirtd ]; then
        # pid is tini; it forwards SIGTERM to libvirtd. Kill libvirtd too if
        # it hangs.
        mapfile -t extra < <(children_of "$pid")
    fi
    log "$name: stopping pid $pid"
    terminate "$STOP_TIMEOUT" "$pid" "${extra[@]}" || die "$name (pid $pid) did not exit"
    rm -f "$(pid_file "$name")"
}

cmd_down() {
    local t0 tini_pid="" ours=false name pid i leftovers=() others=() rc=0
    t0=$(now_ms)
    lock_stack
    if tini_pid=$(owned_pid libvirtd); then ours=true; fi

    if answers libvirtd; then
        if $ours; then
            log "libvirtd was started by this script: destroying ALL running guests and networks"
            destroy_libvirt_objects true
        else
            log "libvirtd is not ours: destroying only guests/networks named $(printf '%s* ' "${TEST_PREFIXES[@]}")"
            destroy_libvirt_objects false
        fi
    fi
    if $ours; then
        mapfile -t leftovers < <(libvirt_helpers "$tini_pid")
    fi

    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        stop_owned "${DAEMONS[i]}"
    done
    if $ours; then
        # A client may have started a guest while libvirtd was going down:
        # libvirt's pid files still name it.
        mapfile -t -O "${#leftovers[@]}" leftovers < <(libvirt_helpers)
    fi

    if [ "${#leftovers[@]}" -gt 0 ]; then
        for pid in "${leftovers[@]}"; do
            if is_alive "$pid"; then
                log "killing leftover $(ps -o comm= -p "$pid" 2>/dev/null || echo process) pid $pid"
            fi
        done
        terminate 10 "${leftovers[@]}" || {
            log "ERROR: leftover QEMU/dnsmasq processes would not die: ${leftovers[*]}"
            rc=1
        }
    fi

    # Anything QEMU/dnsmasq still running does not belong to us: report it.
    mapfile -t others < <(ps -eo pid=,comm= | awk '$2 ~ /^qemu-system/ || $2 == "qemu-kvm" || $2 == "dnsmasq" {print $1}')
    for pid in "${others[@]}"; do
        is_alive "$pid" || continue
        log "note: $(ps -o comm= -p "$pid") pid $pid is still running (not started by this script's libvirtd; left alone)"
    done
    for name in "${DAEMONS[@]}"; do
        if [ -f "$(pid_file "$name")" ]; then
            log "ERROR: $name still recorded in $(pid_file "$name")"
            rc=1
        fi
    done
    log "down: done in $(($(now_ms) - t0)) ms"
    return "$rc"
}

cmd_status() {
    local name pid state owner rc=0
    for name in "${DAEMONS[@]}"; do
        if answers "$name"; then state=answers; else
            state=DOWN
            rc=1
        fi
        if pid=$(owned_pid "$name"); then
            owner="started by real-stack.sh (pid $pid)"
        else
            owner="not started by real-stack.sh"
        fi
        printf '%-13s %-8s %s\n' "$name" "$state" "$owner"
    done
    if [ -f "$ENV_FILE" ]; then
        printf 'env file: %s\n' "$ENV_FILE"
        sed 's/^/  /' "$ENV_FILE"
    else
        printf 'env file: %s (missing: run up)\n' "$ENV_FILE"
    fi
    return "$rc"
}

main() {
    local cmd=${1:-}
    case $cmd in
    up | down | status | packages) ;;
    help | -h | --help)
        usage
        return 0
        ;;
    *)
        usage >&2
        return 2
        ;;
    esac
    require_root "$cmd"
    case $cmd in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    packages) install_packages ;;
    esac
}

main "$@"
