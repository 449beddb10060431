#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests, from the server binaries of
# Debian's postgresql package (initdb, pg_ctl): a cluster in a temporary
# folder, listening on a Unix socket in that folder and on a free loopback
# port, where the superuser "hauld" logs in over TCP with a password
# (scram-sha-256). The password holds characters a URL must escape.
#
#   pg_harness.sh start DIR   make and start a cluster in DIR (a new or
#                             empty folder); print its connection URL
#   pg_harness.sh stop DIR    stop the cluster in DIR and remove DIR
#   pg_harness.sh restart DIR [SECONDS]
#                             stop the server of DIR (fast: connections are
#                             cut), wait SECONDS (default 0), start it again
#                             on the same port
#   pg_harness.sh psql DIR ARGS...
#                             psql as the superuser on DIR's database hauld
#                             (over the Unix socket), e.g. -c 'SELECT 1'
#   pg_harness.sh run CMD...  start a cluster in a temporary folder, run CMD
#                             with HAULD_TEST_PG_URL set to its URL, then
#                             stop and remove it whatever CMD did (also on
#                             a signal); exit with CMD's status
#
# Exits 77 (automake's "skipped") with the reason when the server binaries
# are missing; PG_BINDIR names their folder if it is not the usual one.
# initdb refuses to run as root: as root the server runs as the postgres
# user, which then owns DIR (under /tmp, which it can reach).
set -euo pipefail

die() {
        echo "pg_harness: $*" >&2
        exit 1
}

bindir() {
        local d
        if [[ -n ${PG_BINDIR:-} ]]; then
                echo "$PG_BINDIR"
                return
        fi
        for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
                if [[ -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]]; then
                        echo "$d"
                        return
                fi
        done
        d=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")
        echo "$d"
}

BIN=$(bindir)
if [[ ! -x $BIN/initdb || ! -x $BIN/pg_ctl || ! -x $BIN/postgres || ! -x $BIN/psql ]]; then
        echo "pg_harness: no PostgreSQL server binaries (initdb, pg_ctl, postgres, psql) in $BIN;" \
                "install Debian's postgresql package or set PG_BINDIR" >&2
        exit 77
fi

# Run a command as the cluster's owner.
as_owner() {
        if ((EUID == 0)); then
                runuser -u postgres -- "$@"
        else
                "$@"
        fi
}

free_port() {
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Start the server of DIR's cluster on PORT.
server_start() {
        local dir=$1 port=$2
        # durability is not under test: no fsync, so the suite runs fast
        as_owner "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
                -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='$dir'" \
                -o "-c fsync=off -c full_page_writes=off -c max_connections=40 -c shared_buffers=32MB" \
                start > /dev/null ||
                { cat "$dir/server.log" >&2; die "the server did not start"; }
}

start() {
        local dir=$1 port pw
        mkdir -p "$dir"
        [[ -z $(ls -A "$dir") ]] || die "$dir is not empty"
        dir=$(cd "$dir" && pwd)
        ((EUID != 0)) || chown postgres: "$dir"
        pw="h@uld:$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
        printf '%s\n' "$pw" > "$dir/pwfile"
        chmod 600 "$dir/pwfile"
        ((EUID != 0)) || chown postgres: "$dir/pwfile"
        as_owner "$BIN/initdb" -D "$dir/data" -U hauld --pwfile="$dir/pwfile" -E UTF8 --locale=C \
                --auth-local=trust --auth-host=scram-sha-256 > "$dir/initdb.log" 2>&1 ||
                { cat "$dir/initdb.log" >&2; die "initdb failed"; }
        rm -f "$dir/pwfile"
        port=$(free_port)
        server_start "$dir" "$port"
        as_owner "$BIN/psql" -h "$dir" -p "$port" -U hauld -d postgres -qAt -v ON_ERROR_STOP=1 \
                -c 'CREATE DATABASE hauld' > /dev/null || die "CREATE DATABASE failed"
        echo "$port" > "$dir/port"
        # the URL form of the password: '@' and ':' escaped
        local enc=${pw//@/%40}
        enc=${enc//:/%3A}
        echo "postgresql://hauld:$enc@127.0.0.1:$port/hauld" | tee "$dir/url"
}

stop() {
        local dir=$1
        [[ -d $dir ]] || return 0
        if [[ -f $dir/data/postmaster.pid ]]; then
                as_owner "$BIN/pg_ctl" -D "$dir/data" -m immediate -w stop > /dev/null 2>&1 || true
        fi
        rm -rf "$dir"
}

restart() {
        local dir=$1 pause=${2:-0}
        [[ -f $dir/port ]] || die "$dir holds no cluster made by start"
        as_owner "$BIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop > /dev/null ||
                die "the server did not stop"
        sleep "$pause"
        server_start "$dir" "$(cat "$dir/port")"
}

case ${1:-} in
start)
        [[ $# == 2 ]] || die "usage: $0 start DIR"
        start "$2"
        ;;
stop)
        [[ $# == 2 ]] || die "usage: $0 stop DIR"
        stop "$2"
        ;;
restart)
        [[ $# == 2 || $# == 3 ]] || die "usage: $0 restart DIR [SECONDS]"
        restart "$2" "${3:-0}"
        ;;
psql)
        [[ $# -ge 2 ]] || die "usage: $0 psql DIR ARGS..."
        dir=$2
        shift 2
        [[ -f $dir/port ]] || die "$dir holds no cluster made by start"
        as_owner "$BIN/psql" -h "$dir" -p "$(cat "$dir/port")" -U hauld -d hauld -qAtX -v ON_ERROR_STOP=1 "$@"
        ;;
run)
        shift
        [[ $# -ge 1 ]] || die "usage: $0 run CMD..."
        tail=$(printf 'X%.0s' 1 2 3 4 5 6) # mktemp's template: six capital X
        if ((EUID == 0)); then
                dir=$(mktemp -d "/tmp/hauld-pg-$tail")
        else
                dir=$(mktemp -d "${TMPDIR:-/tmp}/hauld-pg-$tail")
        fi
        child=
        trap 'stop "$dir"' EXIT
        trap '[[ -z $child ]] || kill -TERM "$child" 2>/dev/null; exit 130' INT
        trap '[[ -z $child ]] || kill -TERM "$child" 2>/dev/null; exit 143' TERM
        url=$(start "$dir")
        # in the background, so that a signal is handled at once, not
        # when the command is done
        HAULD_TEST_PG_URL=$url "$@" &
        child=$!
        rc=0
        wait "$child" || rc=$?
        exit $rc
        ;;
*)
        sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
