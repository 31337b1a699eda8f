#!/usr/bin/env bash
# Install the Debian packages Scout needs, but only those whose command is missing.
#
#   scripts/install-system-deps.sh COMMAND:PACKAGE [COMMAND:PACKAGE ...]
#
# The check "ensurepip" stands for Python's venv support (Debian's python3-venv), and
# "pythonheaders" for the headers extensions compile against (python3-dev).
set -euo pipefail

missing=()
for pair in "$@"; do
    check=${pair%%:*}
    package=${pair#*:}
    if [ "$check" = ensurepip ]; then
        "${PYTHON:-python3}" -c 'import ensurepip' 2>/dev/null && continue
    elif [ "$check" = pythonheaders ]; then
        "${PYTHON:-python3}" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
            2>/dev/null && continue
    else
        command -v "$check" >/dev/null 2>&1 && continue
    fi
    case " ${missing[*]-} " in *" $package "*) ;; *) missing+=("$package") ;; esac
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: need the packages ${missing[*]}, and apt-get is not available;" \
        "install them with your package manager and run this again" >&2
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "error: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
fi

echo "installing Debian packages: ${missing[*]}"
# Debian starts a package's own service on install, which would take 9090/9093.
# Scout runs its own copies on chosen ports, so keep those services from starting,
# unless the machine already has a policy in place.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
    "${as_root[@]}" chmod 755 "$policy"
    trap '"${as_root[@]}" rm -f "$policy"' EXIT
fi
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "installed: ${missing[*]}"
