# tests/interop/lib.sh - TAP helpers for the shell suites (sourced, not run).
# pass/fail/skip/is/like print one TAP line each; done_testing prints the plan
# and "# N passed, N failed, N skipped" and returns non-zero on any failure.

T_N=0
T_FAIL=0
T_SKIP=0

diag() { printf '%s\n' "$@" | sed 's/^/#   /'; }

# diag_file FILE [LINES]: the last LINES (default 15) lines of FILE as diagnostics.
diag_file() { [ -s "$1" ] && tail -n "${2:-15}" "$1" | cut -c1-400 | sed 's/^/#   /'; return 0; }

pass() { T_N=$((T_N + 1)); echo "ok $T_N - $*"; }
fail() { T_N=$((T_N + 1)); T_FAIL=$((T_FAIL + 1)); echo "not ok $T_N - $*"; }
skip() { T_N=$((T_N + 1)); T_SKIP=$((T_SKIP + 1)); echo "ok $T_N # SKIP $*"; }

# is GOT WANT NAME
is() {
    if [ "$1" == "$2" ]; then
        pass "$3"
    else
        fail "$3"
        diag "got:  '$1'" "want: '$2'"
    fi
}

# like GOT REGEX NAME (extended regex, grep -E)
like() {
    if printf '%s' "$1" | grep -Eq -- "$2"; then
        pass "$3"
    else
        fail "$3"
        diag "got:  '$(printf '%s' "$1" | head -c 600)'" "want match: /$2/"
    fi
}

done_testing() {
    echo "1..$T_N"
    echo "# $((T_N - T_FAIL - T_SKIP)) passed, $T_FAIL failed, $T_SKIP skipped"
    [ "$T_FAIL" -eq 0 ]
}

# sha256 FILE
sha256() { sha256sum "$1" | cut -d' ' -f1; }

# b64crc32 FILE: base64 of the big-endian CRC32, as x-amz-checksum-crc32 carries it.
b64crc32() {
    python3 -c 'import sys,zlib,base64
d=open(sys.argv[1],"rb").read()
print(base64.b64encode((zlib.crc32(d)&0xffffffff).to_bytes(4,"big")).decode())' "$1"
}

# b64md5 FILE: Content-MD5 value.
b64md5() { python3 -c 'import sys,hashlib,base64; print(base64.b64encode(hashlib.md5(open(sys.argv[1],"rb").read()).digest()).decode())' "$1"; }

# rand_suffix: 8 lowercase hex chars.
rand_suffix() { od -An -N4 -tx1 /dev/urandom | tr -d ' \n'; }
