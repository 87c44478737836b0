# The start of the script that runs the README's shell blocks (tests/support/readme_shell.py).
# Strict, as a careful user would be: the first command that fails ends the run.
set -Eeuo pipefail
KL_TRACE=$(mktemp -d)

# Every curl of the README goes through here: the status of each response is recorded (from
# the headers curl dumps) and its body kept, and the command prints what it always prints.
curl() {
  : > "$KL_TRACE/headers"
  command curl -D "$KL_TRACE/headers" "$@" | tee "$KL_TRACE/body"
  { grep -a '^HTTP/' "$KL_TRACE/headers" || true; } | tail -n 1 | cut -d ' ' -f 2 \
    >> "$KL_TRACE/statuses"
}

# Before each command: which README line runs, and no status recorded yet.
kl_begin() { KL_LINE=$1; : > "$KL_TRACE/statuses"; }

kl_fail() { echo "README line $KL_LINE: $*" >&2; exit 1; }

kl_shown() { head -c 300 "$KL_TRACE/body"; }

# After a command that claims `# → STATUS PHRASE [with HEADER] [{…}]`: exactly one response,
# with that status, those headers, and each part of the body fragment.
kl_end() { # status phrase [header:NAME…] [body part…]
  local got part
  got=$(paste -s -d ' ' "$KL_TRACE/statuses")
  [ "$got" = "$1" ] || kl_fail "claims $1 $2, got ${got:-no HTTP response}: $(kl_shown)"
  shift 2
  for part in "$@"; do
    case "$part" in
      header:*)
        grep -qi "^${part#header:}:" "$KL_TRACE/headers" || kl_fail "no ${part#header:} header"
        ;;
      *) grep -qF -- "$part" "$KL_TRACE/body" || kl_fail "the body lacks $part: $(kl_shown)" ;;
    esac
  done
  echo "$KL_LINE" >> "$KL_TRACE/checked"
}

# Told once: a failure inside $(…) ends the subshell, and then the script.
kl_failed() {
  if [ ! -e "$KL_TRACE/failed" ]; then
    echo "README line ${KL_LINE:-?}: exited with $1" >&2
    : > "$KL_TRACE/failed"
  fi
}
trap 'kl_failed $?' ERR

kl_exit() {
  if [ -n "${KL_CHECKED:-}" ] && [ -f "$KL_TRACE/checked" ]; then
    cp "$KL_TRACE/checked" "$KL_CHECKED"
  fi
  rm -rf "$KL_TRACE"
}
trap kl_exit EXIT
