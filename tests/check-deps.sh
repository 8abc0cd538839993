#!/bin/sh
# tests/check-deps.sh - enforces the dependency direction of STYLE.md by grepping #include
# lines; runs under `make check` and prints TAP. An arrow means "may include":
#   gateway -> metadata, chunkstore, erasure, events, billing, common
#   events, billing -> metadata, common     chunkstore -> erasure, common
#   erasure, metadata -> common             common -> libc only      bench -> common
# Nothing outside a module includes its private headers (*_int.h); nothing outside gateway/
# includes gateway/. Third-party headers stay in one file each: <microhttpd.h> in
# gateway/http.c (and the storage node's own server, chunkstore/chunkd.c), libxml2 in gateway/xml.c, <leveldb/c.h> in metadata/db.c, ISA-L in erasure/rs.c.
set -u
SRC=$(cd "$(dirname "$0")/.." && pwd)
cd "$SRC" || exit 1

MODULES="common erasure metadata chunkstore events billing gateway bench"
allowed() {
    case "$1" in
    common) echo "" ;;
    erasure | metadata) echo "common" ;;
    chunkstore) echo "erasure common" ;;
    events | billing) echo "metadata common" ;;
    gateway) echo "metadata chunkstore erasure events billing common" ;;
    bench) echo "common" ;;
    esac
}

N=0
FAIL=0
TMP=$(mktemp)
trap 'rm -f "$TMP"' EXIT

# report NAME: ok if $TMP is empty, else not ok with its lines as diagnostics.
report() {
    N=$((N + 1))
    if [ -s "$TMP" ]; then
        FAIL=$((FAIL + 1))
        echo "not ok $N - $1"
        sed 's/^/#   /' "$TMP"
    else
        echo "ok $N - $1"
    fi
    : >"$TMP"
}

# includes_fixed DIR: "file:line:target:kind" for every #include in DIR/*.c, *.h, *.def
# (kind q for "...", a for <...>).
includes_fixed() {
    for f in "$1"/*.c "$1"/*.h "$1"/*.def; do
        [ -f "$f" ] || continue
        awk -v f="$f" '
            /^[ \t]*#[ \t]*include[ \t]*["<]/ {
                s = $0; sub(/^[ \t]*#[ \t]*include[ \t]*/, "", s)
                k = substr(s, 1, 1) == "<" ? "a" : "q"
                s = substr(s, 2); sub(/[">].*$/, "", s)
                print f ":" FNR ":" s ":" k
            }' "$f"
    done
}

for m in $MODULES; do
    [ -d "$m" ] || continue
    ok_deps=$(allowed "$m")
    includes_fixed "$m" >"$TMP.all"
    while IFS=: read -r file line target kind; do
        [ "$kind" = q ] || continue
        dir=${target%%/*}
        if [ "$dir" = "$target" ]; then
            echo "$file:$line: #include \"$target\" does not name its module folder" >>"$TMP"
            continue
        fi
        [ "$dir" = "$m" ] && continue
        case " $ok_deps " in
        *" $dir "*)
            case "$target" in
            *_int.h) echo "$file:$line: includes $target, private to $dir/" >>"$TMP" ;;
            esac
            ;;
        *) echo "$file:$line: $m/ may not include $target ($m -> ${ok_deps:-libc only})" >>"$TMP" ;;
        esac
    done <"$TMP.all"
    rm -f "$TMP.all"
    if [ "$m" = common ]; then
        includes_fixed common | awk -F: '$4 == "a" && $3 ~ /\// && $3 !~ /^(sys|arpa|netinet|net|linux|bits)\// { print $1 ":" $2 ": common/ includes <" $3 ">, not libc" }' >>"$TMP"
        includes_fixed common | awk -F: '$4 == "a" && $3 ~ /^(microhttpd|curl|openssl|leveldb|isa-l|libxml|zlib|lz4)/ { print $1 ":" $2 ": common/ includes <" $3 ">" }' >>"$TMP"
    fi
    report "$m/ includes only what it may ($m -> ${ok_deps:-libc only})"
done

# confine THIRD_PARTY_REGEX "ALLOWED_FILE..." NAME
confine() {
    for m in $MODULES; do
        [ -d "$m" ] && includes_fixed "$m"
    done | awk -F: -v re="$1" -v ok="$2" '$4 == "a" && $3 ~ re && index(" " ok " ", " " $1 " ") == 0 { print $1 ":" $2 ": includes <" $3 ">, allowed only in " ok }' >>"$TMP"
    report "$3 only in $2"
}
confine '^microhttpd\.h$' "gateway/http.c chunkstore/chunkd.c" "<microhttpd.h>"
confine '^libxml/' gateway/xml.c "libxml2 headers"
confine '^leveldb/' metadata/db.c "<leveldb/c.h>"
confine '^isa-l(\.h$|/)' erasure/rs.c "ISA-L headers"

# The checker itself must see the tree: if no module was found, that is a failure, not a pass.
[ -d gateway ] && [ -d common ] || echo "source tree not found from $SRC" >>"$TMP"
report "source tree found ($SRC)"

echo "1..$N"
echo "# $((N - FAIL)) passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
