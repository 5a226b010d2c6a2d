#!/bin/sh
# Assemble vendor/ from Debian's Go library packages, so this module builds and
# tests offline with Go 1.19: with vendor/ present, `go build`/`go test` use it
# (-mod=vendor is the default) and never look at the module graph or a proxy.
#
# Needs: apt-get install golang-go golang-google-grpc-dev golang-google-protobuf-dev
#        golang-github-golang-protobuf-1-5-dev   (sources under /usr/share/gocode/src)
#
# Idempotent and fast (copies only the ~70 packages the module imports); rerun it
# when go.mod or the module's imports change. vendor/ is not committed.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
gocode=${GOCODE:-/usr/share/gocode/src}
self=$(sed -n 's/^module[[:space:]]*//p' "$here/go.mod")

command -v go >/dev/null || { echo "debian-vendor.sh: go not found (apt-get install golang-go)" >&2; exit 1; }
[ -d "$gocode/google.golang.org/grpc" ] || {
  echo "debian-vendor.sh: $gocode/google.golang.org/grpc missing (apt-get install golang-google-grpc-dev)" >&2; exit 1; }
[ -f "$gocode/github.com/golang/protobuf/proto/registry.go" ] || {
  echo "debian-vendor.sh: github.com/golang/protobuf is not v1.4+ (apt-get install golang-github-golang-protobuf-1-5-dev)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 1. The module's non-standard imports, with tests: ask go in GOPATH mode, the
#    module's sources (not its vendor/) placed in a scratch GOPATH ahead of Debian's.
mkdir -p "$work/gopath/src/$self"
(cd "$here" && find . -path ./vendor -prune -o -name '*.go' -print) | while read -r f; do
  mkdir -p "$work/gopath/src/$self/$(dirname "$f")"
  cp "$here/$f" "$work/gopath/src/$self/$f"
done
(cd "$work/gopath/src/$self" &&
  GO111MODULE=off GOPATH="$work/gopath:$(dirname "$gocode")" GOFLAGS= \
    go list -deps -test -f '{{if not .Standard}}{{.ImportPath}}{{end}}' ./...) |
  grep -v -e "^$self\(/\|\$\)" -e '\.test$' -e ' ' | sort -u >"$work/pkgs"

# 2. Copy each package's non-test files into vendor.new/ and write modules.txt:
#    a package belongs to the deepest folder above it with a go.mod; the module's
#    version is the one go.mod requires, its go version the one its go.mod states.
out="$work/vendor"
mkdir -p "$out"
: >"$work/pkgmods"
while read -r pkg; do
  mod=$pkg
  while [ ! -f "$gocode/$mod/go.mod" ]; do
    case $mod in */*) mod=${mod%/*} ;; *) echo "debian-vendor.sh: no module holds $pkg" >&2; exit 1 ;; esac
  done
  echo "$mod $pkg" >>"$work/pkgmods"
  mkdir -p "$out/$pkg"
  find "$gocode/$pkg" -maxdepth 1 -type f ! -name '*_test.go' -exec cp {} "$out/$pkg/" \;
done <"$work/pkgs"

for mod in $(cut -d' ' -f1 "$work/pkgmods" | sort -u); do
  version=$(awk -v m="$mod" '$1 == m || ($1 == "require" && $2 == m) { print ($1 == m ? $2 : $3) }' "$here/go.mod")
  [ -n "$version" ] || { echo "debian-vendor.sh: go.mod does not require $mod" >&2; exit 1; }
  gover=$(sed -n 's/^go[[:space:]]*//p' "$gocode/$mod/go.mod")
  for f in LICENSE PATENTS; do [ -f "$gocode/$mod/$f" ] && cp "$gocode/$mod/$f" "$out/$mod/"; done
  echo "# $mod $version"
  echo "## explicit${gover:+; go $gover}"
  awk -v m="$mod" '$1 == m { print $2 }' "$work/pkgmods" | sort
done >"$out/modules.txt"

# Every module go.mod requires must be vendored, or -mod=vendor refuses to build.
for mod in $(awk '/^require \(/{r=1; next} /^\)/{r=0} r && NF {print $1} /^require [^(]/{print $2}' "$here/go.mod"); do
  grep -q "^# $mod " "$out/modules.txt" || { echo "debian-vendor.sh: go.mod requires $mod but nothing imports it" >&2; exit 1; }
done

rm -rf "$here/vendor"
mv "$out" "$here/vendor"
echo "debian-vendor.sh: vendored $(wc -l <"$work/pkgs") packages from $gocode into $here/vendor"
