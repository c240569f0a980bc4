#!/usr/bin/env bash
# Build and install the pinned DMTCP (dmtcp.pin) into a prefix, verified, or fail loudly.
#
#   install-dmtcp.sh --prefix DIR --tarball FILE   # a source tarball whose sha256 must be DMTCP_VENDOR_SHA256
#   install-dmtcp.sh --prefix DIR --git            # clone DMTCP_TAG and check it is DMTCP_COMMIT
#
# The same script builds the test suite's cached DMTCP (from ../shared/vendor) and the worker image's
# (from the release tag), so a wrong URL, flag or package cannot pass the tests and fail on AWS.
# Either way the source is patched with DMTCP_PATCH (sha256-checked; both hunks verified in the source
# before building): spotrun ships DMTCP 4.2.0 with its gang patch (docs/gangs.md, docs/decisions.md).
# It needs a C/C++ compiler, make, tar, patch (and git with --git). Nothing is left behind on failure:
# the build runs in a temporary directory and the prefix is only written by `make install`. A prefix
# it already filled from the same source is verified (version, programs) instead of rebuilt.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=dmtcp.pin
. "$here/dmtcp.pin"

prefix="" tarball="" from_git=0 jobs=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --tarball) tarball=$2; shift 2 ;;
    --git) from_git=1; shift ;;
    --jobs) jobs=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "install-dmtcp: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$prefix" ] || { echo "install-dmtcp: --prefix DIR is required" >&2; exit 2; }
if [ -n "$tarball" ] && [ "$from_git" = 1 ]; then
  echo "install-dmtcp: give --tarball FILE or --git, not both" >&2; exit 2
fi
[ -n "$tarball" ] || [ "$from_git" = 1 ] || { echo "install-dmtcp: give --tarball FILE or --git" >&2; exit 2; }
jobs=${jobs:-$(nproc 2>/dev/null || echo 2)}

# verified FILE EXPECTED_SHA256 WHAT: FILE exists and has the pinned checksum, or the script stops naming both.
verified() {
  [ -f "$1" ] || { echo "install-dmtcp: no such $3: $1" >&2; exit 1; }
  local actual
  actual=$(sha256sum "$1" | cut -d' ' -f1)
  if [ "$actual" != "$2" ]; then
    echo "install-dmtcp: the $3 $1 has sha256 $actual, expected $2 (dmtcp.pin)" >&2
    exit 1
  fi
}

patch_file="$here/$DMTCP_PATCH"
verified "$patch_file" "$DMTCP_PATCH_SHA256" "spotrun's DMTCP patch"
patched="$DMTCP_PATCH sha256:$DMTCP_PATCH_SHA256"

if [ -n "$tarball" ]; then
  verified "$tarball" "$DMTCP_VENDOR_SHA256" "DMTCP $DMTCP_VERSION source tarball"
  wanted="tarball sha256:$DMTCP_VENDOR_SHA256"
else
  wanted="git $DMTCP_TAG $DMTCP_COMMIT"
fi

# A prefix this script already filled from the same source is verified, not rebuilt; one whose stamp
# and programs disagree is refused rather than silently overwritten.
stamp="$prefix/.spotrun-dmtcp"
if [ -f "$stamp" ] && grep -qxF "DMTCP_SOURCE=$wanted" "$stamp" && grep -qxF "DMTCP_VERSION=$DMTCP_VERSION" "$stamp" \
   && grep -qxF "DMTCP_PATCH=$patched" "$stamp"; then
  version=$("$prefix/bin/dmtcp_launch" --version 2>&1 | head -n 1 || true)
  case "$version" in
    *"$DMTCP_VERSION"*)
      for tool in dmtcp_coordinator dmtcp_launch dmtcp_command dmtcp_restart; do
        [ -x "$prefix/bin/$tool" ] || { echo "install-dmtcp: $prefix/bin/$tool is missing; remove $prefix and run again" >&2; exit 1; }
      done
      echo "install-dmtcp: DMTCP $DMTCP_VERSION ($wanted, $patched) is already installed in $prefix" >&2
      exit 0 ;;
    *) echo "install-dmtcp: $prefix says it holds DMTCP $DMTCP_VERSION but dmtcp_launch --version says" \
            "'$version'; remove $prefix and run again" >&2; exit 1 ;;
  esac
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/dmtcp-build.XXXXXX")
trap 'rm -rf "$work"' EXIT

if [ -n "$tarball" ]; then
  tar -xzf "$tarball" -C "$work"
  source_dir="$work/dmtcp-$DMTCP_VERSION"
  origin="tarball sha256:$DMTCP_VENDOR_SHA256"  # verified above
else
  git clone --quiet --depth 1 --branch "$DMTCP_TAG" "$DMTCP_REPOSITORY" "$work/dmtcp-$DMTCP_VERSION"
  source_dir="$work/dmtcp-$DMTCP_VERSION"
  actual=$(git -C "$source_dir" rev-parse HEAD)
  if [ "$actual" != "$DMTCP_COMMIT" ]; then
    echo "install-dmtcp: tag $DMTCP_TAG is commit $actual, expected $DMTCP_COMMIT" >&2
    exit 1
  fi
  origin="git $DMTCP_TAG $actual"
fi
[ -x "$source_dir/configure" ] || { echo "install-dmtcp: $source_dir has no configure script" >&2; exit 1; }

# The gang patch, applied and then checked hunk by hunk in the source that is built (a patch that
# applied with fuzz somewhere else, or not at all, must not pass for a patched build).
patch -p1 --batch --forward --no-backup-if-mismatch -d "$source_dir" <"$patch_file" >"$work/patch.log" 2>&1 \
  || { cat "$work/patch.log" >&2; echo "install-dmtcp: $DMTCP_PATCH does not apply to DMTCP $DMTCP_VERSION" >&2; exit 1; }
grep -qF 'dmtcp_global_barrier("Socket::Drain");' "$source_dir/src/plugin/ipc/socket/socketconnlist.cpp" \
  && ! grep -qF 'dmtcp_local_barrier("Socket::Drain");' "$source_dir/src/plugin/ipc/socket/socketconnlist.cpp" \
  && grep -qF 'dmtcp_get_local_ip_addr(&_ip4RestoreAddr.sin_addr);' "$source_dir/src/plugin/ipc/socket/connectionrewirer.cpp" \
  || { echo "install-dmtcp: $DMTCP_PATCH applied but its hunks are not in the source" >&2; exit 1; }

echo "install-dmtcp: building DMTCP $DMTCP_VERSION ($origin, $patched) into $prefix with $jobs jobs" >&2
(
  cd "$source_dir"
  ./configure --prefix="$prefix" >"$work/configure.log" 2>&1 || { tail -n 40 "$work/configure.log" >&2; exit 1; }
  make -j"$jobs" >"$work/make.log" 2>&1 || { tail -n 40 "$work/make.log" >&2; exit 1; }
  make install >"$work/install.log" 2>&1 || { tail -n 40 "$work/install.log" >&2; exit 1; }
)

version=$("$prefix/bin/dmtcp_launch" --version 2>&1 | head -n 1 || true)
case "$version" in
  *"$DMTCP_VERSION"*) ;;
  *) echo "install-dmtcp: $prefix/bin/dmtcp_launch --version says '$version', expected $DMTCP_VERSION" >&2; exit 1 ;;
esac
for tool in dmtcp_coordinator dmtcp_launch dmtcp_command dmtcp_restart; do
  [ -x "$prefix/bin/$tool" ] || { echo "install-dmtcp: $prefix/bin/$tool is missing after install" >&2; exit 1; }
done
printf 'DMTCP_VERSION=%s\nDMTCP_SOURCE=%s\nDMTCP_PATCH=%s\n' "$DMTCP_VERSION" "$origin" "$patched" > "$prefix/.spotrun-dmtcp"
echo "install-dmtcp: DMTCP $DMTCP_VERSION installed in $prefix" >&2
