#!/usr/bin/env bash
# Build what a spotrun worker needs before it boots: the pinned DMTCP and Python with the agent's
# virtual environment. Run once per image (the stack's EC2 Image Builder component runs it on
# Amazon Linux 2023; the test suite runs it for real into a temporary prefix), never at boot.
#
#   build-worker-image.sh --prefix DIR [--dmtcp-prefix DIR] (--tarball FILE | --git) [--python PYTHON]
#
#   --prefix        where the virtual environment (DIR/venv) and the image manifest (DIR/image.json) go
#   --dmtcp-prefix  where DMTCP goes (default DIR/dmtcp); built by install-dmtcp.sh from the vendored
#                   tarball (sha256-checked) or the release tag (commit-checked), see dmtcp.pin
#   --python        the interpreter the venv is made from (default python3.11; 3.11 or newer)
#
# Ends by checking what it built: `dmtcp_launch --version` is the pinned version and the venv imports
# every pinned requirement. Needs a C/C++ compiler, make, tar (git with --git) and pip's index.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=dmtcp.pin
. "$here/dmtcp.pin"

prefix="" dmtcp_prefix="" python=python3.11 source_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --dmtcp-prefix) dmtcp_prefix=$2; shift 2 ;;
    --tarball) source_args=(--tarball "$2"); shift 2 ;;
    --git) source_args=(--git); shift ;;
    --python) python=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "build-worker-image: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$prefix" ] || { echo "build-worker-image: --prefix DIR is required" >&2; exit 2; }
[ ${#source_args[@]} -gt 0 ] || { echo "build-worker-image: give --tarball FILE or --git" >&2; exit 2; }
dmtcp_prefix=${dmtcp_prefix:-$prefix/dmtcp}
command -v "$python" >/dev/null || { echo "build-worker-image: no $python on PATH" >&2; exit 1; }
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "build-worker-image: $python is $("$python" -V 2>&1); the agent needs Python 3.11 or newer" >&2; exit 1; }

echo "build-worker-image: DMTCP $DMTCP_VERSION into $dmtcp_prefix" >&2
bash "$here/install-dmtcp.sh" --prefix "$dmtcp_prefix" "${source_args[@]}"  # bash: an unzipped copy has no exec bits

echo "build-worker-image: the agent's virtual environment into $prefix/venv ($("$python" -V 2>&1))" >&2
mkdir -p "$prefix"
rm -rf "$prefix/venv"
"$python" -m venv "$prefix/venv"
"$prefix/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$here/requirements.txt"

# What was built, checked: the pinned DMTCP, and every requirement importable in the venv.
version=$("$dmtcp_prefix/bin/dmtcp_launch" --version 2>&1 | head -n 1 || true)
case "$version" in
  *"$DMTCP_VERSION"*) ;;
  *) echo "build-worker-image: $dmtcp_prefix/bin/dmtcp_launch --version says '$version', expected $DMTCP_VERSION" >&2
     exit 1 ;;
esac
"$prefix/venv/bin/python" - "$here/requirements.txt" <<'PY'
import importlib.metadata, sys
wanted = [line.split("==") for line in open(sys.argv[1]).read().splitlines() if "==" in line and not line.startswith("#")]
for name, pinned in wanted:
    installed = importlib.metadata.version(name)
    if installed != pinned.strip():
        sys.exit(f"build-worker-image: {name} {installed} is installed, requirements.txt pins {pinned}")
import boto3, botocore, pydantic, yaml  # noqa: E401,F401 - what the agent imports
PY

python_version=$("$prefix/venv/bin/python" -c 'import platform; print(platform.python_version())')
dmtcp_source=$(sed -n 's/^DMTCP_SOURCE=//p' "$dmtcp_prefix/.spotrun-dmtcp")
cat > "$prefix/image.json" <<JSON
{"dmtcp_version": "$DMTCP_VERSION", "dmtcp_source": "$dmtcp_source", "dmtcp_bin": "$dmtcp_prefix/bin",
 "python": "$python_version", "venv": "$prefix/venv",
 "requirements_sha256": "$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)",
 "built_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"}
JSON
echo "build-worker-image: done; $prefix/image.json describes the image" >&2
