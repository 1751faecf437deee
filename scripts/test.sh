#!/usr/bin/env bash
# The project's test command, the one README.md gives and .ci/run runs: on a fresh machine it
# installs the test requirements, makes sure the browser test has its browser, then runs the
# whole suite. Extra arguments go to pytest (scripts/test.sh tests/test_cli.py -x).
#
# The browser test (tests/browser) drives Debian's chromium at $QEU_CHROMIUM (default
# /usr/bin/chromium) through Playwright: where it is missing it is installed with apt-get when
# this runs as root, else one line says how, and the suite still runs (that test then fails).
# The exit status is pytest's own: 0 only when tests ran and passed (5, "no tests collected",
# fails like any other non-zero status).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
chromium="${QEU_CHROMIUM:-/usr/bin/chromium}"

python -m pip install -q -r requirements-dev.txt
if [ ! -x "$chromium" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq >/dev/null && \
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || true
fi
if [ ! -x "$chromium" ]; then
    echo "scripts/test.sh: no browser at $chromium for tests/browser: install Debian's chromium" \
        "(sudo apt-get install chromium) or set QEU_CHROMIUM to a chromium binary" >&2
fi
exec python -m pytest -q -n 2 "$@"
