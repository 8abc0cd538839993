#!/bin/sh
# Regenerates configure and Makefile.in from configure.ac and Makefile.am.
set -e
cd "$(dirname "$0")"
mkdir -p m4 build-aux
autoreconf -fi
for d in /usr/share/automake-*; do [ -f "$d/tap-driver.sh" ] && cp -f "$d/tap-driver.sh" build-aux/ && break; done
