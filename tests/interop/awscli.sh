#!/usr/bin/env bash
# tests/interop/awscli.sh - the AWS CLI (`s3` and `s3api`) against S3_ENDPOINT, as TAP.
# AWS=/path/to/aws picks the binary (default: the first `aws` on PATH), so run.sh runs this
# once per CLI generation. CAIRN_IT_BIG=0 skips the file over 100 MiB. Needs
# AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; creates and removes its own bucket.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"

AWS=${AWS:-aws}
if ! command -v "$AWS" >/dev/null 2>&1; then
    echo "1..0 # SKIP $AWS is not installed"
    exit 0
fi
: "${S3_ENDPOINT:?S3_ENDPOINT must be set}" "${AWS_ACCESS_KEY_ID:?}" "${AWS_SECRET_ACCESS_KEY:?}"

W=$(mktemp -d "${TMPDIR:-/tmp}/cairn-cli.XXXXXX")
trap 'rm -rf "$W"' EXIT
: >"$W/config"
: >"$W/credentials"
export AWS_CONFIG_FILE="$W/config" AWS_SHARED_CREDENTIALS_FILE="$W/credentials"
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 AWS_PAGER="" AWS_EC2_METADATA_DISABLED=true
export AWS_MAX_ATTEMPTS=1 AWS_RETRY_MODE=standard
unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 AWS_CA_BUNDLE

VER=$("$AWS" --version 2>&1 | head -n1)
case "$VER" in aws-cli/2.*) GEN=v2 ;; *) GEN=v1 ;; esac
echo "# $AWS: $VER"
B="cairn-it-cli$GEN-$(rand_suffix)"
B2="cairn-it-cli$GEN-$(rand_suffix)"
CURRENT=""

# c ARGS...: run aws; stdout in $OUT (and $W/out), stderr in $W/err, exit code in $RC.
c() {
    CURRENT="aws $*"
    timeout "${TMO:-120}" "$AWS" --endpoint-url "$S3_ENDPOINT" --output json "$@" >"$W/out" 2>"$W/err"
    RC=$?
    OUT=$(cat "$W/out")
}

# q ARGS...: run aws with --output text; $OUT is the text.
q() {
    CURRENT="aws $*"
    timeout "${TMO:-120}" "$AWS" --endpoint-url "$S3_ENDPOINT" --output text "$@" >"$W/out" 2>"$W/err"
    RC=$?
    OUT=$(cat "$W/out")
}

# okc NAME ARGS...: the command succeeds.
okc() {
    local name=$1
    shift
    c "$@"
    if [ "$RC" -eq 0 ]; then
        pass "$name"
    else
        fail "$name"
        diag "rc=$RC: aws $*"
        diag_file "$W/err"
    fi
    return "$RC"
}

# unknown_opt: the last command failed because this CLI is too old for an option.
unknown_opt() { grep -Eq 'Unknown options|unrecognized arguments|Invalid choice' "$W/err"; }

# errc NAME CODE STATUS ARGS...: the command fails with S3 error CODE and HTTP STATUS; the
# error body (not for HEAD) is XML with a RequestId; the response has x-amz-request-id.
errc() {
    local name=$1 code=$2 status=$3
    shift 3
    c --debug "$@"
    local bad=""
    [ "$RC" -ne 0 ] || bad="command succeeded;"
    grep -q "An error occurred ($code)" "$W/err" || bad="$bad no '($code)' in the error;"
    grep -Eq "HTTP/1\.1\" $status |'status_code': $status|Response status: $status" "$W/err" ||
        bad="$bad HTTP status is not $status;"
    grep -qi "x-amz-request-id" "$W/err" || bad="$bad no x-amz-request-id header;"
    case "$code" in [0-9]*) ;; *) grep -q "<RequestId>" "$W/err" || bad="$bad no <RequestId> in the XML body;" ;; esac
    if [ -z "$bad" ]; then
        pass "$name"
    else
        fail "$name"
        diag "aws $*" "$bad"
        grep -E "An error occurred|HTTP/1\.1\" [0-9]+|Response body" -A1 "$W/err" | head -n 8 | cut -c1-400 | sed 's/^/#   /'
    fi
}

mkdir -p "$W/up" "$W/down"
printf 'hello cairn\n' >"$W/up/small.txt"
: >"$W/up/empty"
head -c 204800 /dev/urandom >"$W/up/f200k"
head -c $((20 * 1024 * 1024)) /dev/urandom >"$W/up/f20m"
head -c $((5 * 1024 * 1024)) /dev/urandom >"$W/up/p5a"
head -c $((5 * 1024 * 1024)) /dev/urandom >"$W/up/p5b"
head -c 1000 /dev/urandom >"$W/up/p1k"
seq 1 400 | tr -d '\n' | head -c 1000 >"$W/up/digits" # 1000 bytes, known content

# ------------------------------------------------------------------ aws s3
okc "s3 mb s3://$B" s3 mb "s3://$B"
c s3 ls
like "$OUT" "$B" "s3 ls lists the new bucket"

for f in small.txt empty f200k f20m; do
    if okc "s3 cp $f up" s3 cp --no-progress "$W/up/$f" "s3://$B/cp/$f"; then
        okc "s3 cp $f down" s3 cp --no-progress "s3://$B/cp/$f" "$W/down/$f" &&
            is "$(sha256 "$W/down/$f")" "$(sha256 "$W/up/$f")" "s3 cp $f: sha256 after download"
    fi
done
q s3api head-object --bucket "$B" --key cp/empty --query ContentLength
is "$OUT" "0" "head-object of the 0-byte object: ContentLength 0"
q s3api head-object --bucket "$B" --key cp/f20m --query ETag
like "$OUT" '^"[0-9a-f]{32}-3"$' "20 MiB cp is multipart (8 MiB parts): ETag ends in -3"

if [ "${CAIRN_IT_BIG:-1}" != 0 ]; then
    BIG=$((101 * 1024 * 1024 + 4321))
    head -c "$BIG" /dev/urandom >"$W/up/big"
    TMO=900 okc "s3 cp over 100 MiB up" s3 cp --no-progress "$W/up/big" "s3://$B/cp/big" &&
        TMO=900 okc "s3 cp over 100 MiB down" s3 cp --no-progress "s3://$B/cp/big" "$W/down/big" &&
        is "$(sha256 "$W/down/big")" "$(sha256 "$W/up/big")" "s3 cp over 100 MiB: sha256 after download"
    q s3api head-object --bucket "$B" --key cp/big --query ContentLength
    is "$OUT" "$BIG" "head-object of the big object: ContentLength"
    rm -f "$W/up/big" "$W/down/big"
else
    skip "s3 cp over 100 MiB (CAIRN_IT_BIG=0)"
fi

q s3 ls "s3://$B/cp/"
like "$OUT" 'small\.txt' "s3 ls s3://bucket/prefix/ lists objects"
q s3 ls "s3://$B/"
like "$OUT" 'PRE cp/' "s3 ls s3://bucket/ shows the prefix as PRE"

# sync a tree with awkward names, back down, compare; a second sync uploads nothing.
T="$W/tree"
mkdir -p "$T/a b/c+d" "$T/日本" "$T/x&y" "$T/dir/sub dir/deep" "$T/pct%2Fx"
echo one >"$T/a b/c+d/e%f.txt"
echo two >"$T/日本/é.txt"
echo three >"$T/x&y/z=1;v.txt"
echo four >"$T/dir/sub dir/deep/file 1.txt"
echo five >"$T/pct%2Fx/plus+sign"
echo six >"$T/top'quote\".txt"
head -c 300000 /dev/urandom >"$T/dir/bin.dat"
find "$T" -type f -exec touch -d '2020-01-02 03:04:05' {} + # older than any upload
okc "s3 sync up (nested awkward names)" s3 sync --no-progress "$T" "s3://$B/tree/"
okc "s3 sync down" s3 sync --no-progress "s3://$B/tree/" "$W/tree2"
if diff -r "$T" "$W/tree2" >"$W/diff" 2>&1; then pass "s3 sync round trip is identical"; else
    fail "s3 sync round trip is identical"
    diag_file "$W/diff"
fi
c s3 sync --no-progress "$T" "s3://$B/tree/"
is "$RC:$OUT" "0:" "second s3 sync uploads nothing"
rm -f "$T/x&y/z=1;v.txt"
c s3 sync --no-progress --delete "$T" "s3://$B/tree/"
like "$OUT" 'delete: s3://.*z=1;v\.txt' "s3 sync --delete removes the deleted file"
q s3api list-objects-v2 --bucket "$B" --prefix tree/ --query 'length(Contents)'
is "$OUT" "6" "6 objects left under tree/ after sync --delete"

okc "s3 rm one object" s3 rm "s3://$B/cp/small.txt"
okc "s3 rm --recursive" s3 rm --recursive "s3://$B/tree/"
q s3api list-objects-v2 --bucket "$B" --prefix tree/ --query 'length(Contents || `[]`)'
is "$OUT" "0" "nothing left under tree/ after rm --recursive"

# stdin and stdout streams (size unknown up front: the CLI uploads in parts as data comes)
printf 'from stdin\n' | c s3 cp - "s3://$B/stream/small"
is "$RC" 0 "s3 cp - (stdin, small)"
head -c $((12 * 1024 * 1024 + 5)) /dev/urandom >"$W/up/f12m"
c s3 cp - "s3://$B/stream/big" <"$W/up/f12m"
is "$RC" 0 "s3 cp - (stdin, 12 MiB: multipart of unknown length)"
timeout 300 "$AWS" --endpoint-url "$S3_ENDPOINT" s3 cp "s3://$B/stream/big" - 2>"$W/err" | sha256sum | cut -d' ' -f1 >"$W/sum"
is "$(cat "$W/sum")" "$(sha256 "$W/up/f12m")" "s3 cp to - (stdout): sha256 of the 12 MiB stream"
rm -f "$W/up/f12m"
printf 'move me\n' >"$W/up/mvme"
okc "s3 mv local -> s3" s3 mv "$W/up/mvme" "s3://$B/mv/a"
is "$([ -e "$W/up/mvme" ] && echo still there || echo gone)" "gone" "s3 mv removed the local file"
okc "s3 mv s3 -> s3" s3 mv "s3://$B/mv/a" "s3://$B/mv/b"
q s3api list-objects-v2 --bucket "$B" --prefix mv/ --query 'Contents[].Key'
is "$OUT" "mv/b" "s3 mv: the source is gone, the destination is there"
errc "s3 ls of a missing bucket -> NoSuchBucket" NoSuchBucket 404 s3 ls "s3://$B2/"

# ---------------------------------------------------------------- buckets
for bad in Bad_Name ab -leading-dash trailing-dash- two..dots 192.168.1.10 "$(printf 'x%.0s' {1..64})"; do
    errc "create-bucket '$bad' -> InvalidBucketName" InvalidBucketName 400 s3api create-bucket --bucket="$bad"
done
errc "second create-bucket -> BucketAlreadyOwnedByYou" BucketAlreadyOwnedByYou 409 s3api create-bucket --bucket "$B"
okc "head-bucket" s3api head-bucket --bucket "$B"
errc "head-bucket of a missing bucket -> 404" 404 404 s3api head-bucket --bucket "$B2"
q s3api get-bucket-location --bucket "$B" --query LocationConstraint
like "$OUT" '^(None|us-east-1|)$' "get-bucket-location"
q s3api list-buckets --query "Buckets[?Name=='$B'].Name"
is "$OUT" "$B" "list-buckets has the bucket"
q s3api list-buckets --query "Owner.ID"
like "$OUT" '.' "list-buckets has an Owner"

# -------------------------------------------------------- object headers
okc "put-object with content headers and metadata" s3api put-object --bucket "$B" --key hdr/obj \
    --body "$W/up/small.txt" --content-type "text/x-cairn; charset=utf-8" --cache-control "max-age=60" \
    --content-disposition 'attachment; filename="a b.txt"' --content-encoding identity \
    --content-language en-GB --expires "2030-01-02T03:04:05Z" --metadata color=blue,answer=42
for mode in head get; do
    if [ $mode = head ]; then c s3api head-object --bucket "$B" --key hdr/obj; else
        c s3api get-object --bucket "$B" --key hdr/obj "$W/down/hdr"
    fi
    j() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); v=eval(sys.argv[2]); print(v)' "$W/out" "$1" 2>/dev/null; }
    is "$(j 'd.get("ContentType")')" "text/x-cairn; charset=utf-8" "$mode-object: Content-Type"
    is "$(j 'd.get("CacheControl")')" "max-age=60" "$mode-object: Cache-Control"
    is "$(j 'd.get("ContentDisposition")')" 'attachment; filename="a b.txt"' "$mode-object: Content-Disposition"
    is "$(j 'd.get("ContentEncoding")')" "identity" "$mode-object: Content-Encoding"
    is "$(j 'd.get("ContentLanguage")')" "en-GB" "$mode-object: Content-Language"
    like "$(j 'd.get("Expires") or d.get("ExpiresString")')" '2030' "$mode-object: Expires"
    is "$(j 'sorted(d.get("Metadata",{}).items())')" "[('answer', '42'), ('color', 'blue')]" "$mode-object: user metadata"
done
is "$(cat "$W/down/hdr")" "hello cairn" "get-object body"

# ------------------------------------------------------------ Content-MD5
okc "put-object with a good Content-MD5" s3api put-object --bucket "$B" --key md5/good --body "$W/up/small.txt" \
    --content-md5 "$(b64md5 "$W/up/small.txt")"
errc "put-object with a wrong Content-MD5 -> BadDigest" BadDigest 400 s3api put-object --bucket "$B" \
    --key md5/bad --body "$W/up/small.txt" --content-md5 "$(b64md5 "$W/up/digits")"
errc "nothing stored after BadDigest" 404 404 s3api head-object --bucket "$B" --key md5/bad

# --------------------------------------------------------- conditional put
c s3api put-object --bucket "$B" --key cond/new --body "$W/up/small.txt" --if-none-match '*'
if [ "$RC" -ne 0 ] && unknown_opt; then
    skip "put-object --if-none-match: this CLI has no such option"
    skip "put-object --if-none-match again -> PreconditionFailed"
    skip "put-object --if-match"
    skip "put-object --if-match mismatch -> PreconditionFailed"
else
    is "$RC" 0 "put-object --if-none-match '*' on a new key"
    [ "$RC" -eq 0 ] || diag_file "$W/err"
    errc "put-object --if-none-match '*' again -> PreconditionFailed" PreconditionFailed 412 \
        s3api put-object --bucket "$B" --key cond/new --body "$W/up/small.txt" --if-none-match '*'
    q s3api head-object --bucket "$B" --key cond/new --query ETag
    okc "put-object --if-match current ETag" s3api put-object --bucket "$B" --key cond/new \
        --body "$W/up/digits" --if-match "$OUT"
    errc "put-object --if-match mismatch -> PreconditionFailed" PreconditionFailed 412 \
        s3api put-object --bucket "$B" --key cond/new --body "$W/up/small.txt" --if-match '"00000000000000000000000000000000"'
fi

# ------------------------------------------------------------ ranged GET
okc "put digits" s3api put-object --bucket "$B" --key range/digits --body "$W/up/digits"
okc "put 200 KiB for ranges" s3api put-object --bucket "$B" --key range/f200k --body "$W/up/f200k"
rng() { # rng KEY RANGE WANT_BYTES_FILE NAME
    c s3api get-object --bucket "$B" --key "$1" --range "$2" "$W/down/rng"
    if [ "$RC" -eq 0 ] && cmp -s "$W/down/rng" "$3"; then pass "$4"; else
        fail "$4"
        diag "rc=$RC range $2, got $(wc -c <"$W/down/rng" 2>/dev/null) bytes, want $(wc -c <"$3")"
        diag_file "$W/err" 5
    fi
}
head -c 1 "$W/up/digits" >"$W/want"
rng range/digits bytes=0-0 "$W/want" "get-object --range bytes=0-0"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d.get("ContentRange"), d.get("ContentLength"))' "$W/out" >"$W/cr"
is "$(cat "$W/cr")" "bytes 0-0/1000 1" "bytes=0-0: Content-Range and Content-Length"
tail -c +11 "$W/up/digits" >"$W/want"
rng range/digits bytes=10- "$W/want" "get-object --range bytes=10-"
tail -c 5 "$W/up/digits" >"$W/want"
rng range/digits bytes=-5 "$W/want" "get-object --range bytes=-5"
tail -c +991 "$W/up/digits" >"$W/want"
rng range/digits bytes=990-5000 "$W/want" "get-object --range past the end is clamped"
dd if="$W/up/f200k" of="$W/want" bs=1 skip=70000 count=65537 status=none
rng range/f200k bytes=70000-135536 "$W/want" "get-object --range across blocks of a coded object"
errc "range beyond the end -> InvalidRange" InvalidRange 416 s3api get-object --bucket "$B" --key range/digits \
    --range bytes=1000-2000 "$W/down/x"

q s3api get-object --bucket "$B" --key range/digits --response-content-type application/x-over \
    --response-content-disposition "inline; filename=o.txt" --response-cache-control no-store \
    --query '[ContentType,ContentDisposition,CacheControl]' "$W/down/x"
is "$(echo $OUT)" "application/x-over inline; filename=o.txt no-store" "get-object response-* overrides"

q s3api head-object --bucket "$B" --key range/digits --query ETag
ETAG=$OUT
errc "get-object If-None-Match current ETag -> 304" 304 304 s3api get-object --bucket "$B" --key range/digits \
    --if-none-match "$ETAG" "$W/down/x"
okc "get-object If-None-Match other ETag -> 200" s3api get-object --bucket "$B" --key range/digits \
    --if-none-match '"0123456789abcdef0123456789abcdef"' "$W/down/x"
okc "get-object If-Match current ETag" s3api get-object --bucket "$B" --key range/digits --if-match "$ETAG" "$W/down/x"
errc "get-object If-Match mismatch -> PreconditionFailed" PreconditionFailed 412 s3api get-object \
    --bucket "$B" --key range/digits --if-match '"0123456789abcdef0123456789abcdef"' "$W/down/x"
q s3api head-object --bucket "$B" --key range/digits --query LastModified
errc "get-object If-Modified-Since its LastModified -> 304" 304 304 s3api get-object --bucket "$B" --key range/digits \
    --if-modified-since "$OUT" "$W/down/x"
okc "get-object If-Modified-Since the past -> 200" s3api get-object --bucket "$B" --key range/digits \
    --if-modified-since 2000-01-01T00:00:00Z "$W/down/x"
errc "get-object If-Unmodified-Since the past -> PreconditionFailed" PreconditionFailed 412 s3api get-object \
    --bucket "$B" --key range/digits --if-unmodified-since 2000-01-01T00:00:00Z "$W/down/x"

# ------------------------------------------------------------ copy-object
okc "copy-object (metadata directive COPY)" s3api copy-object --bucket "$B" --key copy/dst1 --copy-source "$B/hdr/obj"
q s3api head-object --bucket "$B" --key copy/dst1 --query '[ContentType,Metadata.color,ContentLength]'
is "$(echo $OUT)" "text/x-cairn; charset=utf-8 blue 12" "COPY keeps content type and metadata"
okc "copy-object (metadata directive REPLACE)" s3api copy-object --bucket "$B" --key copy/dst2 \
    --copy-source "$B/hdr/obj" --metadata-directive REPLACE --content-type application/x-new --metadata color=red
q s3api head-object --bucket "$B" --key copy/dst2 --query '[ContentType,Metadata.color,Metadata.answer]'
is "$(echo $OUT)" "application/x-new red None" "REPLACE replaces content type and metadata"
okc "copy-object of a coded object" s3api copy-object --bucket "$B" --key copy/f200k --copy-source "$B/range/f200k"
okc "get the copy" s3api get-object --bucket "$B" --key copy/f200k "$W/down/c200k" &&
    is "$(sha256 "$W/down/c200k")" "$(sha256 "$W/up/f200k")" "copied coded object is byte-exact"
errc "copy-object from a missing key -> NoSuchKey" NoSuchKey 404 s3api copy-object --bucket "$B" \
    --key copy/x --copy-source "$B/no/such/key"

# ---------------------------------------------------------------- deletes
okc "delete-object" s3api delete-object --bucket "$B" --key copy/dst1
errc "deleted object is gone" 404 404 s3api head-object --bucket "$B" --key copy/dst1
okc "delete-object of a missing key succeeds" s3api delete-object --bucket "$B" --key copy/never-was
for k in del/1 del/2 "del/th ree"; do c s3api put-object --bucket "$B" --key "$k" --body "$W/up/small.txt"; done
q s3api delete-objects --bucket "$B" --delete '{"Objects":[{"Key":"del/1"},{"Key":"del/2"},{"Key":"del/missing"}]}' \
    --query 'length(Deleted)'
is "$OUT" "3" "delete-objects reports 3 deleted (missing keys count as deleted)"
q s3api delete-objects --bucket "$B" --delete '{"Objects":[{"Key":"del/th ree"}],"Quiet":true}' --query 'Deleted'
is "$RC:$OUT" "0:None" "delete-objects Quiet lists nothing"
q s3api list-objects-v2 --bucket "$B" --prefix del/ --query 'length(Contents || `[]`)'
is "$OUT" "0" "delete-objects removed them"

# ------------------------------------------------------------------ lists
for k in p/a/1 p/a/2 p/b/1 p/c p/d "p/e f" "p/g+h"; do
    c s3api put-object --bucket "$B" --key "$k" --body "$W/up/small.txt"
done
q s3api list-objects-v2 --bucket "$B" --prefix p/ --delimiter / --query '[CommonPrefixes[].Prefix, Contents[].Key]'
is "$(echo $OUT)" "p/a/ p/b/ p/c p/d p/e f p/g+h" "list-objects-v2 prefix + delimiter"
q s3api list-objects-v2 --bucket "$B" --prefix p/ --max-keys 3 --query '[KeyCount,IsTruncated,NextContinuationToken]'
read -r kc trunc tok <<<"$OUT"
is "$kc $trunc" "3 True" "list-objects-v2 max-keys 3 is truncated"
q s3api list-objects-v2 --bucket "$B" --prefix p/ --max-keys 3 --continuation-token "$tok" --query 'Contents[].Key'
is "$(echo $OUT)" "p/c p/d p/e f" "list-objects-v2 continuation-token gives the next page"
q s3api list-objects-v2 --bucket "$B" --prefix p/ --start-after p/c --query 'Contents[].Key'
is "$(echo $OUT)" "p/d p/e f p/g+h" "list-objects-v2 start-after"
q s3api list-objects-v2 --bucket "$B" --prefix p/ --page-size 2 --query 'Contents[].Key'
is "$(echo $OUT)" "p/a/1 p/a/2 p/b/1 p/c p/d p/e f p/g+h" "list-objects-v2 paginated by the CLI (page size 2)"
q s3api list-objects-v2 --bucket "$B" --prefix "p/" --encoding-type url --query 'Contents[].Key'
is "$(echo $OUT)" "p/a/1 p/a/2 p/b/1 p/c p/d p/e%20f p/g%2Bh" "list-objects-v2 encoding-type url encodes keys"
q s3api list-objects --bucket "$B" --prefix p/ --marker p/b/1 --max-keys 2 --query '[IsTruncated, Contents[].Key]'
is "$(echo $OUT)" "True p/c p/d" "list-objects (v1) marker + max-keys"
q s3api list-objects --bucket "$B" --prefix p/ --delimiter / --max-keys 1 --query '[IsTruncated,NextMarker,CommonPrefixes[].Prefix]'
is "$(echo $OUT)" "True p/a/ p/a/" "list-objects (v1) delimiter + max-keys gives NextMarker"
q s3api list-objects --bucket "$B" --prefix p/ --page-size 2 --query 'Contents[].Key'
is "$(echo $OUT)" "p/a/1 p/a/2 p/b/1 p/c p/d p/e f p/g+h" "list-objects (v1) paginated by the CLI"
q s3api list-object-versions --bucket "$B" --prefix p/c --query 'Versions[].[Key,VersionId,IsLatest]'
is "$(echo $OUT)" "p/c null True" "list-object-versions: VersionId null"

# -------------------------------------------------------------- multipart
q s3api create-multipart-upload --bucket "$B" --key mp/obj --content-type application/x-mp --query UploadId
UID1=$OUT
like "$UID1" '.' "create-multipart-upload returns an UploadId"
q s3api upload-part --bucket "$B" --key mp/obj --upload-id "$UID1" --part-number 1 --body "$W/up/p5a" --query ETag
E1=$OUT
q s3api upload-part --bucket "$B" --key mp/obj --upload-id "$UID1" --part-number 2 --body "$W/up/p5b" --query ETag
E2=$OUT
q s3api upload-part --bucket "$B" --key mp/obj --upload-id "$UID1" --part-number 3 --body "$W/up/p1k" --query ETag
E3=$OUT
like "$E1 $E2 $E3" '^"[0-9a-f]{32}" "[0-9a-f]{32}" "[0-9a-f]{32}"$' "upload-part x3 return ETags"
q s3api list-parts --bucket "$B" --key mp/obj --upload-id "$UID1" --query 'Parts[].[PartNumber,Size]'
is "$(echo $OUT)" "1 5242880 2 5242880 3 1000" "list-parts"
q s3api list-multipart-uploads --bucket "$B" --query "Uploads[?Key=='mp/obj'].UploadId"
is "$OUT" "$UID1" "list-multipart-uploads"
mpu() { printf '{"Parts":[%s]}' "$(printf '%s\n' "$@" | sed 's/^\([0-9]*\):\(.*\)$/{"PartNumber":\1,"ETag":\2}/' | paste -sd,)"; }
errc "complete with a wrong ETag -> InvalidPart" InvalidPart 400 s3api complete-multipart-upload --bucket "$B" \
    --key mp/obj --upload-id "$UID1" --multipart-upload "$(mpu "1:$E1" "2:\"0123456789abcdef0123456789abcdef\"" "3:$E3")"
errc "complete in the wrong order -> InvalidPartOrder" InvalidPartOrder 400 s3api complete-multipart-upload \
    --bucket "$B" --key mp/obj --upload-id "$UID1" --multipart-upload "$(mpu "2:$E2" "1:$E1" "3:$E3")"
okc "complete-multipart-upload" s3api complete-multipart-upload --bucket "$B" --key mp/obj --upload-id "$UID1" \
    --multipart-upload "$(mpu "1:$E1" "2:$E2" "3:$E3")"
want_etag=$(cat "$W/up/p5a" "$W/up/p5b" "$W/up/p1k" | python3 -c '
import sys,hashlib
d=sys.stdin.buffer.read(); parts=[d[:5<<20], d[5<<20:10<<20], d[10<<20:]]
print("\"%s-3\"" % hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest())')
q s3api head-object --bucket "$B" --key mp/obj --query '[ETag,ContentLength,ContentType]'
is "$(echo $OUT)" "$want_etag 10486760 application/x-mp" "multipart object: ETag md5-of-md5s-3, size, type"
okc "get multipart object" s3api get-object --bucket "$B" --key mp/obj "$W/down/mp"
is "$(sha256 "$W/down/mp")" "$(cat "$W/up/p5a" "$W/up/p5b" "$W/up/p1k" | sha256sum | cut -d' ' -f1)" "multipart object is byte-exact"
rng mp/obj bytes=5242870-5242889 <(dd if="$W/down/mp" bs=1 skip=5242870 count=20 status=none) "range across a part boundary"

q s3api create-multipart-upload --bucket "$B" --key mp/small --query UploadId
UID2=$OUT
q s3api upload-part --bucket "$B" --key mp/small --upload-id "$UID2" --part-number 1 --body "$W/up/p1k" --query ETag
S1=$OUT
q s3api upload-part --bucket "$B" --key mp/small --upload-id "$UID2" --part-number 2 --body "$W/up/p1k" --query ETag
S2=$OUT
errc "complete with a small non-last part -> EntityTooSmall" EntityTooSmall 400 s3api complete-multipart-upload \
    --bucket "$B" --key mp/small --upload-id "$UID2" --multipart-upload "$(mpu "1:$S1" "2:$S2")"
okc "abort-multipart-upload" s3api abort-multipart-upload --bucket "$B" --key mp/small --upload-id "$UID2"
errc "list-parts after abort -> NoSuchUpload" NoSuchUpload 404 s3api list-parts --bucket "$B" --key mp/small --upload-id "$UID2"
errc "upload-part after abort -> NoSuchUpload" NoSuchUpload 404 s3api upload-part --bucket "$B" --key mp/small \
    --upload-id "$UID2" --part-number 3 --body "$W/up/p1k"
q s3api list-multipart-uploads --bucket "$B" --query 'length(Uploads || `[]`)'
is "$OUT" "0" "no uploads left in progress"

# ----------------------------------------------------------------- errors
errc "get-object from a missing bucket -> NoSuchBucket" NoSuchBucket 404 s3api get-object --bucket "$B2" --key k "$W/down/x"
errc "list-objects-v2 of a missing bucket -> NoSuchBucket" NoSuchBucket 404 s3api list-objects-v2 --bucket "$B2"
errc "get-object of a missing key -> NoSuchKey" NoSuchKey 404 s3api get-object --bucket "$B" --key no/such "$W/down/x"
errc "head-object of a missing key -> 404" 404 404 s3api head-object --bucket "$B" --key no/such
errc "delete-bucket that is not empty -> BucketNotEmpty" BucketNotEmpty 409 s3api delete-bucket --bucket "$B"
errc "delete-bucket of a missing bucket -> NoSuchBucket" NoSuchBucket 404 s3api delete-bucket --bucket "$B2"
AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY}x" errc "wrong secret -> SignatureDoesNotMatch" \
    SignatureDoesNotMatch 403 s3api list-objects-v2 --bucket "$B"
AWS_ACCESS_KEY_ID="AKNOSUCHKEY$(rand_suffix | tr a-f A-F)" errc "unknown access key -> InvalidAccessKeyId" \
    InvalidAccessKeyId 403 s3api list-buckets

# --------------------------------------------------------------- presign
printf '[default]\ns3 =\n    signature_version = s3v4\n' >"$W/config-v4"
if command -v curl >/dev/null; then
    # Without configuration the v1 CLI presigns with SigV2 (AWSAccessKeyId=, Signature=): report
    # what the server does with that, but only SigV4 URLs are required.
    c s3 presign "s3://$B/range/digits" --expires-in 600
    URL=$OUT
    code=$(curl -s -m 30 -o "$W/down/pre" -w '%{http_code}' "$URL")
    if [ "$code" = 200 ] && cmp -s "$W/down/pre" "$W/up/digits"; then pass "presigned GET with curl, CLI default URL"
    elif [[ $URL == *AWSAccessKeyId=* ]]; then skip "presigned GET, CLI default URL: it is SigV2 and the server answered $code"
    else
        fail "presigned GET with curl, CLI default URL"
        diag "HTTP $code for $URL"
        diag_file "$W/down/pre" 3
    fi
    AWS_CONFIG_FILE="$W/config-v4" c s3 presign "s3://$B/range/digits" --expires-in 600
    URL=$OUT
    code=$(curl -s -m 30 -o "$W/down/pre" -w '%{http_code}' "$URL")
    if [ "$code" = 200 ] && cmp -s "$W/down/pre" "$W/up/digits"; then pass "presigned GET (SigV4) with curl"; else
        fail "presigned GET (SigV4) with curl"
        diag "HTTP $code for $URL"
        diag_file "$W/down/pre" 3
    fi
    PKEY="pre/sp ace+é&%25 #.txt"
    c s3api put-object --bucket "$B" --key "$PKEY" --body "$W/up/small.txt"
    AWS_CONFIG_FILE="$W/config-v4" c s3 presign "s3://$B/$PKEY" --expires-in 600
    URL=$OUT
    code=$(curl -s -m 30 -o "$W/down/pre" -w '%{http_code}' "$URL")
    if [ "$code" = 200 ] && cmp -s "$W/down/pre" "$W/up/small.txt"; then pass "presigned GET (SigV4) of an awkward key"; else
        fail "presigned GET (SigV4) of an awkward key"
        diag "HTTP $code for $URL"
        diag_file "$W/down/pre" 3
    fi
    AWS_CONFIG_FILE="$W/config-v4" c s3 presign "s3://$B/range/digits" --expires-in 1
    URL=$OUT
    sleep 3
    code=$(curl -s -m 30 -o "$W/down/pre" -w '%{http_code}' "$URL")
    body=$(cat "$W/down/pre")
    if [ "$code" = 403 ] && [[ $body == *"<Code>AccessDenied</Code>"* ]] && [[ $body == *"<RequestId>"* ]]; then
        pass "expired presigned GET -> 403 AccessDenied"
    else
        fail "expired presigned GET -> 403 AccessDenied"
        diag "HTTP $code: $(head -c 400 "$W/down/pre")"
    fi
else
    skip "presigned GET, CLI default URL: no curl"
    skip "presigned GET (SigV4) with curl: no curl"
    skip "presigned GET (SigV4) of an awkward key: no curl"
    skip "expired presigned GET: no curl"
fi

# -------------------------------------------------------------- checksums
c s3api put-object --bucket "$B" --key ck/crc32 --body "$W/up/f200k" --checksum-algorithm CRC32
is "$RC" 0 "put-object --checksum-algorithm CRC32"
q s3api head-object --bucket "$B" --key ck/crc32 --checksum-mode ENABLED --query ChecksumCRC32
is "$OUT" "$(b64crc32 "$W/up/f200k")" "head-object --checksum-mode ENABLED returns the CRC32 sent"
errc "put-object with a wrong x-amz-checksum-crc32 -> BadDigest" BadDigest 400 s3api put-object --bucket "$B" \
    --key ck/bad --body "$W/up/f200k" --checksum-crc32 AAAAAA==
errc "nothing stored after a checksum mismatch" 404 404 s3api head-object --bucket "$B" --key ck/bad

# ----------------------------------------------------------- awkward keys
LONG=$(printf 'k%.0s' {1..1020})
AWKS=("sp ace/a b" "plus+sign" "pct%25 and %" "pct%2Fslash" "amp&er=sand;x" "é/café" "日本/語.txt"
    "q?uestion#hash" "tilde~star*(paren)" "lead/../dots" "dq\"sq'bs\\" "$LONG")
: >"$W/awk-keys"
for key in "${AWKS[@]}"; do
    short=${key:0:32}
    if okc "put-object key 'awk/$short'" s3api put-object --bucket "$B" --key "awk/$key" --body "$W/up/small.txt"; then
        c s3api get-object --bucket "$B" --key "awk/$key" "$W/down/awk"
        is "$RC:$(cat "$W/down/awk" 2>/dev/null)" "0:hello cairn" "get-object key 'awk/$short'"
        printf 'awk/%s\n' "$key" >>"$W/awk-keys"
    fi
done
is "$(printf 'awk/%s' "$LONG" | wc -c)" 1024 "(the long key above is 1024 bytes)"
c s3api list-objects-v2 --bucket "$B" --prefix awk/
is "$(python3 -c '
import json, sys
got = set(o["Key"] for o in json.load(open(sys.argv[1])).get("Contents", []))
want = set(open(sys.argv[2], encoding="utf-8").read().splitlines())
print("same" if got == want else "missing %r, unexpected %r" % (sorted(want - got), sorted(got - want)))' "$W/out" "$W/awk-keys" 2>&1)" \
    same "list-objects-v2 shows every awkward key exactly"
okc "s3 rm --recursive of the awkward keys" s3 rm --recursive "s3://$B/awk/"
q s3api list-objects-v2 --bucket "$B" --prefix awk/ --query 'length(Contents || `[]`)'
is "$OUT" "0" "awkward keys all deleted"
errc "1025-byte key -> KeyTooLongError" KeyTooLongError 400 s3api put-object --bucket "$B" \
    --key "x$(printf 'y%.0s' {1..1024})" --body "$W/up/small.txt"
okc "1024-byte key" s3api put-object --bucket "$B" --key "$(printf 'z%.0s' {1..1024})" --body "$W/up/small.txt"

# ---------------------------------------------------------------- cleanup
okc "s3 rb --force" s3 rb --force "s3://$B"
errc "bucket is gone" 404 404 s3api head-bucket --bucket "$B"

done_testing
