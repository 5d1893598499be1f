# Sourced by .ci/run: one temporary directory for everything the run makes, removed on exit.
#
# Guarantee: every temporary file or directory the run makes through mktemp, Python's
# tempfile or any tool that honours $TMPDIR (pip's build dirs, Chromium, pytest's basetemp)
# lives under $ci_tmp, and $ci_tmp is removed when the run ends: success, failure (set -e),
# Ctrl-C, SIGTERM or SIGHUP. Before, each run left ~380 MB in /tmp (three venvs, browser
# profiles, pytest's last three basetemps). Not covered: SIGKILL (no trap can run).
# Deliberate caches live outside it (the conformance suite's npm install: ~/.cache).

ci_tmp="$(mktemp -d "${TMPDIR:-/tmp}/ci-run.XXXXXXXX")"
ci_cleanup() {
    # Read-only files (pip and npm make some) do not stop rm -rf as the owner; a failure
    # to remove is said, never hidden, and does not change the run's exit code.
    rm -rf -- "$ci_tmp" || echo "ci: could not remove $ci_tmp" >&2
}
trap ci_cleanup EXIT
# An untrapped signal kills bash without running the EXIT trap: turn each into an exit.
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
export TMPDIR="$ci_tmp"
