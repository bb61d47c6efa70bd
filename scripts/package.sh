#!/usr/bin/env bash
# Builds patrol's Azure Functions deployment package: a zip whose root holds host.json, the function folders
# of the handler's function table (RotateTimer, RotateHttp, EventGridSecretChanged), the policy file as patrol.toml, and the handler
# binary named `handler` with its execute bit (mode 0755). Everything else is 0644; timestamps and order are
# fixed, so the same inputs give the same zip, byte for byte. Its SHA-256 is written to <zip>.sha256.
#
# By default it builds a static x86_64-unknown-linux-musl release binary (no glibc mismatch on the Functions
# host). Needs: rustup target x86_64-unknown-linux-musl, musl-tools (musl-gcc, for the C parts of aws-lc-sys),
# python3 (>= 3.11, for the checks), zip. `--binary PATH` packages a binary built elsewhere instead.
#
# Usage: scripts/package.sh [--binary PATH] [--policy FILE] [--app-dir DIR] [--out ZIP] [--stage DIR]
#                           [--allow-dynamic]
#   --binary PATH    package this binary instead of building one (it is checked: ELF x86-64, static)
#   --policy FILE    the policy file to ship as patrol.toml (default: patrol.toml at the repository root)
#   --app-dir DIR    where host.json and the function folders are (default: the repository root)
#   --out ZIP        the zip to write (default: dist/patrol-functions.zip)
#   --stage DIR      also leave the unzipped package in DIR (azd deploys this directory; see azure.yaml).
#                    DIR must be absent, empty, or hold only what this script puts there.
#   --allow-dynamic  accept a dynamically linked binary (tests and local experiments only: the Functions host
#                    may not have the glibc it was linked against)
# Exit codes: 0 packaged, 1 a check failed or the build failed, 2 usage error.
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
binary=""
policy="$repo_root/patrol.toml"
app_dir="$repo_root"
out="$repo_root/dist/patrol-functions.zip"
stage_keep=""
allow_dynamic=0
target="x86_64-unknown-linux-musl"
# The functions, their trigger bindings and trigger types come from the handler's one table of functions
# (`FUNCTIONS` in src/handler/functions.rs), read below: a new trigger needs no edit here.
function_table="$repo_root/src/handler/functions.rs"

die() { echo "package: error: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --binary) [ $# -ge 2 ] || usage; binary="$2"; shift 2 ;;
    --policy) [ $# -ge 2 ] || usage; policy="$2"; shift 2 ;;
    --app-dir) [ $# -ge 2 ] || usage; app_dir="$2"; shift 2 ;;
    --out) [ $# -ge 2 ] || usage; out="$2"; shift 2 ;;
    --stage) [ $# -ge 2 ] || usage; stage_keep="$2"; shift 2 ;;
    --allow-dynamic) allow_dynamic=1; shift ;;
    -h|--help) usage ;;
    *) echo "package: unknown argument: $1" >&2; usage ;;
  esac
done

[ "$(uname -s)" = Linux ] || die "package.sh runs on Linux (or WSL): it builds a Linux binary and uses GNU tools"
command -v zip >/dev/null 2>&1 || die "zip is not installed (Debian: apt-get install zip; or run scripts/setup.sh)"
command -v python3 >/dev/null 2>&1 || die "python3 is needed for the package checks"

# ---- the function table ---------------------------------------------------------------------------------------
[ -f "$function_table" ] || die "the handler's function table is missing: $function_table"
table="$(python3 - "$function_table" <<'PY'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
rows = re.findall(r'FunctionSpec\s*\{\s*function:\s*FunctionName::\w+,\s*name:\s*"(\w+)",\s*binding:\s*"(\w+)",'
                  r'\s*trigger:\s*"(\w+)",?\s*\}', text)
if not rows:
    sys.exit("no FunctionSpec rows found")
for name, binding, trigger in sorted(rows):
    print(name, binding, trigger)
PY
)" || die "cannot read the function table in $function_table"
functions=()
while read -r name _; do functions+=("$name"); done <<< "$table"

# ---- inputs -------------------------------------------------------------------------------------------------
[ -f "$policy" ] || die "policy file not found: $policy (write one, or pass --policy FILE; see docs/deploy.md)"
[ -s "$policy" ] || die "policy file is empty: $policy"
[ -f "$app_dir/host.json" ] || die "host.json not found in $app_dir (pass --app-dir DIR)"
for f in "${functions[@]}"; do
  [ -f "$app_dir/$f/function.json" ] || die "function folder missing: $app_dir/$f/function.json"
done

if [ -z "$binary" ]; then
  echo "package: building patrol for $target (release)" >&2
  if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx "$target"; then
    die "Rust target $target is not installed: rustup target add $target"
  fi
  # aws-lc-sys (rustls' crypto) compiles C: for musl it needs a musl C compiler.
  if [ -z "${CC_x86_64_unknown_linux_musl:-}" ]; then
    if command -v musl-gcc >/dev/null 2>&1; then
      export CC_x86_64_unknown_linux_musl=musl-gcc
    else
      echo "package: warning: musl-gcc not found; if the build fails in aws-lc-sys, install musl-tools" >&2
    fi
  fi
  # --no-default-features: the production handler leaves out `patrol demo` and the whole emulator.
  (cd "$repo_root" && cargo build --release --locked --target "$target" --bin patrol --no-default-features) \
    || die "cargo build --release --no-default-features --target $target failed"
  binary="$repo_root/target/$target/release/patrol"
fi
[ -f "$binary" ] || die "binary not found: $binary"

# ---- checks (JSON shape of host.json and function.json, TOML syntax of the policy, ELF of the binary) ---------
python3 - "$app_dir" "$policy" "$binary" "$allow_dynamic" "$table" <<'PY' || exit 1
import json, struct, sys
from pathlib import Path

app_dir, policy, binary, allow_dynamic = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "1"
problems = []

def load(path):
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as e:
        problems.append(f"{path}: not valid JSON ({e})")
        return None

host = load(app_dir / "host.json")
if isinstance(host, dict):
    exe = (((host.get("customHandler") or {}).get("description") or {}).get("defaultExecutablePath"))
    if exe != "handler":
        problems.append(f"host.json: customHandler.description.defaultExecutablePath is {exe!r}, must be 'handler' "
                        "(the binary's name at the package root)")
    if not (host.get("extensionBundle") or {}).get("id"):
        problems.append("host.json: no extensionBundle (the Event Grid trigger comes from the bundle)")

# name -> (binding, trigger) from the handler's function table.
expected = {n: (b, t) for n, b, t in (line.split() for line in sys.argv[5].splitlines() if line.strip())}
for name, (binding, trigger) in expected.items():
    fj = load(app_dir / name / "function.json")
    if fj is None:
        continue
    ins = [b for b in (fj.get("bindings") or []) if isinstance(b, dict) and b.get("direction") == "in"]
    kinds = [b.get("type") for b in ins]
    if trigger not in kinds:
        problems.append(f"{name}/function.json: no {trigger} binding (found {kinds})")
    elif not any(b.get("type") == trigger and b.get("name") == binding for b in ins):
        problems.append(f"{name}/function.json: the {trigger} binding must be named {binding!r} (the handler reads "
                        "that key of the invocation's Data)")

try:
    import tomllib
except ImportError:  # Python < 3.11: syntax is checked by patrol at start instead
    tomllib = None
if tomllib is not None:
    try:
        tomllib.loads(policy.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        problems.append(f"{policy}: not valid TOML ({e})")

data = binary.read_bytes()[:1 << 16]
if data[:4] != b"\x7fELF":
    problems.append(f"{binary}: not an ELF executable (the Functions host runs Linux x86-64)")
elif data[4] != 2 or data[5] != 1:
    problems.append(f"{binary}: not a 64-bit little-endian ELF")
else:
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    if e_machine != 62:
        problems.append(f"{binary}: ELF machine {e_machine}, not x86-64 (62)")
    if e_type not in (2, 3):
        problems.append(f"{binary}: ELF type {e_type} is not an executable")
    e_phoff, = struct.unpack_from("<Q", data, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    interp = any(
        e_phoff + i * e_phentsize + 4 <= len(data)
        and struct.unpack_from("<I", data, e_phoff + i * e_phentsize)[0] == 3  # PT_INTERP
        for i in range(e_phnum)
    )
    if interp and not allow_dynamic:
        problems.append(f"{binary}: dynamically linked (has an ELF interpreter); build for x86_64-unknown-linux-musl "
                        "so it cannot hit a glibc mismatch on the Functions host (or pass --allow-dynamic)")

for p in problems:
    print(f"package: error: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY

# ---- stage and zip -----------------------------------------------------------------------------------------
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
install -m 0644 "$app_dir/host.json" "$stage/host.json"
install -m 0644 "$policy" "$stage/patrol.toml"
install -m 0755 "$binary" "$stage/handler"
for f in "${functions[@]}"; do
  install -d -m 0755 "$stage/$f"
  install -m 0644 "$app_dir/$f/function.json" "$stage/$f/function.json"
done
entries=()
for f in "${functions[@]}"; do entries+=("$f/function.json"); done
entries+=(handler host.json patrol.toml)

# Fixed timestamps (SOURCE_DATE_EPOCH, default 1980-01-01, the earliest a zip can hold) for reproducible output.
epoch="${SOURCE_DATE_EPOCH:-315532800}"
find "$stage" -exec touch -h -d "@$epoch" {} +

mkdir -p "$(dirname "$out")"
out_abs="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
rm -f "$out_abs"
# -X: no uid/gid or extra timestamps, -D: no directory entries; Info-ZIP keeps each file's Unix mode.
(cd "$stage" && TZ=UTC zip -q -X -D "$out_abs" "${entries[@]}") || die "zip failed"

if [ -n "$stage_keep" ]; then
  if [ -e "$stage_keep" ]; then
    [ -d "$stage_keep" ] || die "--stage $stage_keep exists and is not a directory"
    for existing in "$stage_keep"/* "$stage_keep"/.[!.]*; do
      [ -e "$existing" ] || continue
      base="$(basename "$existing")"
      case " host.json handler patrol.toml ${functions[*]} " in
        *" $base "*) ;;
        *) die "--stage $stage_keep holds $base, which this script did not put there; refusing to replace it" ;;
      esac
    done
    rm -rf "$stage_keep"
  fi
  mkdir -p "$stage_keep"
  (cd "$stage" && cp -p -R . "$stage_keep/")
fi

sha="$(sha256sum "$out_abs" | cut -d' ' -f1)"
# A checksum file beside the zip (sha256sum -c format), to verify a kept package before a rollback.
printf '%s  %s\n' "$sha" "$(basename "$out_abs")" > "$out_abs.sha256"
echo "package: wrote $out_abs ($(stat -c %s "$out_abs") bytes, sha256 $sha)" >&2
echo "$out_abs"
