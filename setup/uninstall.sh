#!/usr/bin/env bash
# Remove what setup/install.sh installed (same PREFIX and DESTDIR), keeping an edited
# /etc/chute/chute.conf, the key file and every backup. See install.sh.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/install.sh" --uninstall
