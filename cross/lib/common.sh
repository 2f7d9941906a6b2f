# shellcheck shell=bash
# Shared by cross/build, cross/check and cross/test: the supported targets, the
# tools they need (installed from the package registries when missing) and the
# cargo invocation for each target. Sourced, not executed.
#
# Why it is shaped this way (each point measured on a Debian 12 x86_64 host):
# - every target is musl and fully static, linked by cargo-zigbuild with zig
#   from the `ziglang` PyPI package; zig compiles the bundled C (SQLite, zstd,
#   ring) against real musl headers;
# - the build hosts' rustup serves a prebuilt musl std only for aarch64; the
#   other three build std from rust-src (`RUSTC_BOOTSTRAP=1 -Zbuild-std`), and then
#   zig, not rustc, must supply crt1.o and libc (`-C link-self-contained=no`);
# - mipsel must be non-PIE (`-C relocation-model=static`): the default
#   static-pie build crashes before main.

# shellcheck disable=SC2034  # TARGETS and CROSS_DIST are used by the sourcing scripts
TARGETS=(
  aarch64-unknown-linux-musl
  armv7-unknown-linux-musleabihf
  arm-unknown-linux-musleabihf
  mipsel-unknown-linux-musl
)

CROSS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# A target dir of its own: a cross build holds cargo's lock for minutes and
# must not block native builds in target/.
CROSS_TARGET_DIR="${BULKFLOW_CROSS_TARGET_DIR:-$CROSS_ROOT/target/cross}"
CROSS_DIST="${BULKFLOW_CROSS_DIST:-$CROSS_ROOT/dist}"
# The size-tuned profile from the workspace Cargo.toml.
CROSS_PROFILE="${BULKFLOW_CROSS_PROFILE:-edge}"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

is_target() {
  local t
  for t in "${TARGETS[@]}"; do [ "$t" = "$1" ] && return 0; done
  return 1
}

# Expands "all" and validates names; prints one target per line.
expand_targets() {
  local t
  [ $# -gt 0 ] || { echo "name a target or 'all': ${TARGETS[*]}" >&2; return 1; }
  for t in "$@"; do
    if [ "$t" = all ]; then
      printf '%s\n' "${TARGETS[@]}"
    elif is_target "$t"; then
      printf '%s\n' "$t"
    else
      echo "unknown target '$t'; known: ${TARGETS[*]} all" >&2
      return 1
    fi
  done
}

# Debian packages (by command they provide), once.
ensure_apt() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  echo "== apt-get install ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_zig() {
  python3 -m ziglang version >/dev/null 2>&1 && return 0
  python3 -m pip --version >/dev/null 2>&1 || ensure_apt python3:python3 pip3:python3-pip
  echo "== pip install ziglang"
  # Debian's own python3 refuses pip installs outside a venv (PEP 668). The
  # wheel is a self-contained zig binary, so a user install harms nothing.
  python3 -m pip install -q --disable-pip-version-check ziglang 2>/dev/null ||
    python3 -m pip install -q --disable-pip-version-check --user --break-system-packages ziglang
}

ensure_zigbuild() {
  if ! command -v cargo-zigbuild >/dev/null; then
    echo "== cargo install cargo-zigbuild (about 2 minutes)"
    cargo install -q --locked cargo-zigbuild
  fi
}

ensure_rust_src() {
  if ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
    echo "== rustup component add rust-src"
    rustup component add rust-src >/dev/null 2>&1
  fi
}

# True when rustup serves a prebuilt std for the target on our build hosts.
# Building std from source works for every target, so this is only a speed-up.
has_prebuilt_std() {
  [ "$1" = aarch64-unknown-linux-musl ]
}

ensure_rust_target() {
  local t=$1
  if has_prebuilt_std "$t"; then
    # One target per command: a single 404 would roll back a whole list.
    if ! rustup target list --installed | grep -qx "$t"; then
      echo "== rustup target add $t"
      rustup target add "$t" >/dev/null 2>&1
    fi
  else
    ensure_rust_src
  fi
}

# Everything a build of target $1 needs.
ensure_cross_tools() {
  ensure_apt python3:python3 cc:gcc
  ensure_zig
  ensure_zigbuild
  ensure_rust_target "$1"
}

# SQLite as the edge uses it: rusqlite's bundled build enables full-text
# search, R-tree, dbstat, STAT4, soundex and extension loading, none of which
# the outbox needs (about 0.5 MB of code). JSON functions are unused as well.
SQLITE_TRIM="-USQLITE_ENABLE_FTS3 -USQLITE_ENABLE_FTS3_PARENTHESIS -USQLITE_ENABLE_FTS5
  -USQLITE_ENABLE_RTREE -USQLITE_ENABLE_DBSTAT_VTAB -USQLITE_ENABLE_STAT4 -USQLITE_SOUNDEX
  -USQLITE_ENABLE_LOAD_EXTENSION -DSQLITE_OMIT_LOAD_EXTENSION -DSQLITE_OMIT_JSON
  -DSQLITE_OMIT_DEPRECATED -DSQLITE_OMIT_SHARED_CACHE -DSQLITE_DEFAULT_MEMSTATUS=0"

# Sets CROSS_ENV (variables) and CROSS_ARGS (extra cargo arguments) for $1.
cross_settings() {
  local t=$1 upper flags
  upper=$(echo "$t" | tr '[:lower:]-' '[:upper:]_')
  # RUSTC_BOOTSTRAP=1 for every target, not only the build-std ones: several
  # build scripts (anyhow, serde, ...) rerun when it changes, and alternating
  # would rebuild the host artifacts the targets share in CROSS_TARGET_DIR.
  CROSS_ENV=(CARGO_TARGET_DIR="$CROSS_TARGET_DIR" RUSTC_BOOTSTRAP=1 "LIBSQLITE3_FLAGS=$SQLITE_TRIM")
  CROSS_ARGS=(--locked --target "$t" -p bulkflow-edge)
  flags=""
  if ! has_prebuilt_std "$t"; then
    CROSS_ARGS+=("-Zbuild-std=std,panic_abort")
    flags="-C link-self-contained=no"
  fi
  if [ "$t" = mipsel-unknown-linux-musl ]; then
    flags="$flags -C relocation-model=static"
  fi
  # The per-target variable leaves host build scripts and other targets alone.
  [ -z "$flags" ] || CROSS_ENV+=("CARGO_TARGET_${upper}_RUSTFLAGS=${flags# }")
}

# The qemu-user command for a target (binfmt is not registered in containers,
# so qemu is always called explicitly). ARMv6: the Pi Zero/1 CPU, because
# qemu's default "max" CPU would run ARMv7 code too.
qemu_for() {
  case $1 in
    aarch64-*) echo qemu-aarch64-static ;;
    armv7-*) echo qemu-arm-static ;;
    arm-*) echo "qemu-arm-static -cpu arm1176" ;;
    mipsel-*) echo qemu-mipsel-static ;;
  esac
}

dist_binary() {
  echo "$CROSS_DIST/bulkflow-edge-$1"
}
