#!/usr/bin/env bash
# Install chute on a Raspberry Pi (or any Debian-like machine), from a copy of the
# binary and this setup/ folder:
#
#   sudo setup/install.sh [BINARY]     # BINARY: default ./chute, else next to setup/
#   sudo setup/install.sh --uninstall  # or setup/uninstall.sh
#
#   PREFIX   where the binary goes: $PREFIX/bin/chute (default /usr/local)
#   DESTDIR  stage everything under this directory instead of / (for packaging)
#
# Installs:
#   $PREFIX/bin/chute
#   /etc/chute/chute.conf                   never replaces an existing one
#   /lib/systemd/system/chute-serve.service  not enabled: see the next steps printed
#   /lib/systemd/system/chute-sink.service   at the end
#   /lib/systemd/system/chute-sink.timer
#   /etc/cron.d/chute                       the nightly backup: active at once, but it
#                                           backs up nothing until CHUTE_PATHS is set
#   $PREFIX/share/man/man1/chute*.1         the man pages (man chute, man chute-sink)
#   $PREFIX/share/bash-completion/completions/chute
#   $PREFIX/share/zsh/site-functions/_chute the shell completions
#   $PREFIX/share/fish/vendor_completions.d/chute.fish
#   /etc/chute/installed                    the record of the files above, so that
#                                           uninstall finds them whatever PREFIX it gets
# Uninstall removes exactly the recorded files (or, with no record, those above for
# its PREFIX), except a chute.conf that differs from the shipped one (it holds the
# owner's settings: it is kept, and said so), and never touches the key file, the
# allow list or any backup.
set -euo pipefail

PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
while [ "${DESTDIR%/}" != "$DESTDIR" ]; do DESTDIR=${DESTDIR%/}; done # "/x/" -> "/x", "/" -> ""
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

BIN_PATH=$PREFIX/bin/chute             # as the units and cron see it
CONF=$DESTDIR/etc/chute/chute.conf
UNIT_DIR=$DESTDIR/lib/systemd/system
UNITS=(chute-serve.service chute-sink.service chute-sink.timer)
CRON=$DESTDIR/etc/cron.d/chute         # no dot in the name: cron skips such files
# The man pages and completions `make docs` made (chute generate), and where each goes.
DOCS=(
	"completions/chute.bash:$PREFIX/share/bash-completion/completions/chute"
	"completions/_chute:$PREFIX/share/zsh/site-functions/_chute"
	"completions/chute.fish:$PREFIX/share/fish/vendor_completions.d/chute.fish"
)
for page in "$HERE"/man/*.1; do
	[ -e "$page" ] && DOCS+=("man/${page##*/}:$PREFIX/share/man/man1/${page##*/}")
done
# What install put down, one absolute path a line (without DESTDIR), after a header
# line naming the format; uninstall removes these.
RECORD=$DESTDIR/etc/chute/installed
RECORD_HEADER='# chute install record 1: files setup/install.sh installed; --uninstall removes them'

die() { printf 'setup/install.sh: %s\n' "$*" >&2; exit 1; }
say() { printf '  %s\n' "$*"; }

# systemd is only told about changes on a live system (no DESTDIR) that runs it.
live_systemd() { [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

# The shipped units and cron entry name /usr/local/bin/chute; point them at PREFIX.
install_templated() { # SRC DEST
	local tmp
	tmp=$(mktemp)
	sed "s|/usr/local/bin/chute|$BIN_PATH|g" "$1" >"$tmp"
	install -m 0644 "$tmp" "$2"
	rm -f "$tmp"
	say "$2"
}

do_install() {
	local bin=${1:-}
	if [ -z "$bin" ]; then
		for bin in ./chute "$HERE/../chute" "$HERE/chute" ""; do
			[ -f "$bin" ] && break
		done
		[ -n "$bin" ] || die "no chute binary in . or next to setup/: give its path (setup/install.sh PATH)"
	fi
	[ -f "$bin" ] || die "no such binary: $bin"
	if [ -z "$DESTDIR" ] && ! "$bin" --help >/dev/null 2>&1; then
		# An armv7 build on a Pi Zero/1 dies here with "Illegal instruction".
		die "$bin does not run on this machine ($(uname -m)): is it the right build? (armv7 for Pi 2/3/4/Zero 2, armv6 for Pi Zero/1)"
	fi
	[ -n "$DESTDIR" ] || [ "$(id -u)" -eq 0 ] || die "run as root (sudo), or set DESTDIR to stage the files"

	echo "Installing chute${DESTDIR:+ into $DESTDIR}:"
	install -d -m 0755 "$DESTDIR$PREFIX/bin" "$DESTDIR/etc/chute" "$UNIT_DIR" "$DESTDIR/etc/cron.d"
	install -m 0755 "$bin" "$DESTDIR$BIN_PATH"
	say "$DESTDIR$BIN_PATH"

	if [ -e "$CONF" ]; then
		say "$CONF (exists: left as it is)"
	else
		install -m 0644 "$HERE/chute.conf" "$CONF"
		say "$CONF"
	fi
	local u
	for u in "${UNITS[@]}"; do
		install_templated "$HERE/$u" "$UNIT_DIR/$u"
	done
	install_templated "$HERE/chute.cron" "$CRON"
	local doc docs=()
	for doc in "${DOCS[@]}"; do
		install -D -m 0644 "$HERE/${doc%%:*}" "$DESTDIR${doc#*:}"
		docs+=("${doc#*:}")
	done
	say "$DESTDIR$PREFIX/share/...: ${#docs[@]} man pages and completions"
	{
		echo "$RECORD_HEADER"
		echo "$BIN_PATH"
		for u in "${UNITS[@]}"; do echo "${UNIT_DIR#"$DESTDIR"}/$u"; done
		echo "${CRON#"$DESTDIR"}"
		printf '%s\n' "${docs[@]}"
	} >"$RECORD"
	chmod 0644 "$RECORD"
	say "$RECORD"
	if live_systemd; then systemctl daemon-reload; fi

	cat <<-NEXT

		Next steps:
		  1. sudoedit /etc/chute/chute.conf
		       set CHUTE_REMOTE (a directory, or http://PEER:2002) and CHUTE_PATHS.
		  2. sudo chute init
		       creates the key at /etc/chute/key (CHUTE_KEY_FILE) and, if CHUTE_REMOTE is a
		       directory, the store there (no other command creates one). Copy the key
		       somewhere safe, off this machine: without it no backup can ever be restored.
		  3. sudo chute sink && sudo chute list
		       a first backup by hand. From then on /etc/cron.d/chute runs it nightly at
		       03:17, logging to syslog (journalctl -t chute). To use systemd instead:
		       sudo systemctl enable --now chute-sink.timer   (cron then stands aside)
		  On a machine that keeps its peers' backups:
		       run \`chute key auth\` on each node that will store here; put the NODE=KEY
		       lines it prints in /etc/chute/allow (sudo install -m 600 /dev/null
		       /etc/chute/allow; sudoedit /etc/chute/allow), then
		       sudo systemctl enable --now chute-serve        (port 2002, store /var/lib/chute)
	NEXT
}

# rmdir DIR and its parents while empty, but only inside a DESTDIR staging tree:
# on a live system /etc/cron.d or /usr/local/bin are not ours to remove.
prune() {
	[ -n "$DESTDIR" ] || return 0
	local d=$1
	while [ "$d" != "$DESTDIR" ] && [ "${d#"$DESTDIR"/}" != "$d" ] && rmdir "$d" 2>/dev/null; do
		d=$(dirname "$d")
	done
}

remove() { # FILE
	if [ -e "$1" ] || [ -L "$1" ]; then
		rm -f "$1"
		say "removed $1"
	fi
	prune "$(dirname "$1")"
}

do_uninstall() {
	[ -n "$DESTDIR" ] || [ "$(id -u)" -eq 0 ] || die "run as root (sudo), or set DESTDIR"
	echo "Uninstalling chute${DESTDIR:+ from $DESTDIR}:"
	if live_systemd; then
		systemctl disable --now chute-serve.service chute-sink.timer 2>/dev/null || true
	fi
	local f files=()
	if [ -f "$RECORD" ]; then
		[ "$(head -n 1 "$RECORD")" = "$RECORD_HEADER" ] ||
			die "$RECORD is not an install record this script reads: remove the files it lists by hand"
		while IFS= read -r f; do
			case $f in
			/*) files+=("$DESTDIR$f") ;;
			esac
		done < <(tail -n +2 "$RECORD")
	else
		# Installed by a version that kept no record: this PREFIX's files.
		for f in "${UNITS[@]}"; do files+=("$UNIT_DIR/$f"); done
		files+=("$CRON" "$DESTDIR$BIN_PATH")
		for f in "${DOCS[@]}"; do files+=("$DESTDIR${f#*:}"); done
	fi
	for f in "${files[@]}"; do
		remove "$f"
	done
	if live_systemd; then systemctl daemon-reload; fi
	[ ! -e "$RECORD" ] || { rm -f "$RECORD"; say "removed $RECORD"; }

	if [ -e "$CONF" ]; then
		if cmp -s "$CONF" "$HERE/chute.conf"; then
			remove "$CONF"
		else
			say "kept $CONF: it was edited (remove it by hand if it is no longer wanted)"
		fi
	fi
	# /etc/chute itself goes only when empty: the key file lives there too, and a key
	# is never removed by this script.
	if [ -d "$DESTDIR/etc/chute" ]; then
		if rmdir "$DESTDIR/etc/chute" 2>/dev/null; then
			say "removed $DESTDIR/etc/chute/"
			prune "$DESTDIR/etc"
		else
			say "kept $DESTDIR/etc/chute/ (not empty: key, allow list or edited config)"
		fi
	fi
	if [ -z "$DESTDIR" ]; then
		echo "Backups and the store (/var/lib/chute, CHUTE_REMOTE) were not touched."
	fi
}

case ${1:-} in
--uninstall)
	[ $# -eq 1 ] || die "usage: setup/install.sh --uninstall"
	do_uninstall
	;;
-h | --help)
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
	;;
-*) die "unknown option $1 (usage: setup/install.sh [BINARY] | --uninstall)" ;;
*)
	[ $# -le 1 ] || die "usage: setup/install.sh [BINARY] | --uninstall"
	do_install "${1:-}"
	;;
esac
