# Sourced by the scripts beside it.  require COMMAND PACKAGE: makes sure COMMAND is on the PATH,
# installing Debian's PACKAGE when it is missing (as root, with apt-get); elsewhere it fails,
# saying what to install.  The e2e tier never skips for want of a tool.
require() {
  local command=$1 package=$2 out
  command -v "$command" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    printf '%s is missing: install it (Debian: apt-get install %s)\n' "$command" "$package" >&2
    return 1
  fi
  printf 'installing %s from the Debian archive\n' "$package" >&2
  if ! out=$( (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$package") 2>&1); then
    printf 'apt-get install %s failed:\n%s\n' "$package" "$(tail -n 20 <<<"$out")" >&2
    return 1
  fi
}
