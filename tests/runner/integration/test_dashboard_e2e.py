"""``examples/dashboard.py`` end to end with a real headless Chromium: the dashboard is started
with ``--sandbox 2``; Chromium loads the dashboard page, then the authorization URL the page
shows for the first server, and follows the sandbox's consent to that login's listener; the
second login's callback address is pasted through the dashboard's form (an HTTP POST, as a
person whose browser cannot reach this machine would); Chromium's dump of the page then shows
both logins ended ok. Also: the page refuses a foreign ``Host``, a post without the run's
token, a foreign ``Origin`` and an oversized body, and escapes what it shows."""

from __future__ import annotations

import html
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest

from support.waiting import wait_for

pytestmark = [pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "examples" / "dashboard.py"


def find_chromium() -> str:
    import shutil

    path = shutil.which("chromium")
    if path is None:
        message = "chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def dump_dom(chromium: str, url: str, tmp_path: Path) -> str:
    """Headless Chromium loads ``url`` (following redirects) and prints the final DOM."""
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-quic", f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[str]:
    """The dashboard on ``--sandbox 2``: its URL; stopped (SIGINT, then killed) at the end."""
    env = {**os.environ, "PORTLEASE_DIR": str(tmp_path / "leases")}
    with subprocess.Popen(
        [sys.executable, str(DASHBOARD), "--sandbox", "2", "--timeout", "90"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        try:
            line = proc.stdout.readline()  # its first line, once it listens
            match = re.fullmatch(r"dashboard: (http://127\.0\.0\.1:\d+/)\n", line)
            assert match is not None, line + proc.stdout.read()
            yield match.group(1)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def logins(base: str) -> dict[str, dict[str, object]]:
    answer = httpx.get(urljoin(base, "logins.json"), timeout=10)
    answer.raise_for_status()
    result: dict[str, dict[str, object]] = answer.json()["logins"]
    return result


def notes(base: str) -> list[str]:
    """What the page says of pastes that named no login."""
    answer = httpx.get(urljoin(base, "logins.json"), timeout=10)
    answer.raise_for_status()
    found: list[str] = answer.json()["notes"]
    return found


def callback_address(authorization_url: str) -> str:
    """Follow the sandbox's consent by hand up to the login's callback address (not visited)."""
    redirect = parse_qs(urlsplit(authorization_url).query)["redirect_uri"][0]
    url = authorization_url
    with httpx.Client(timeout=10, follow_redirects=False) as client:
        for _ in range(10):
            if url.startswith(redirect):
                return url
            answer = client.get(url)
            assert answer.is_redirect, (answer.status_code, answer.text[:500])
            url = urljoin(url, answer.headers["location"])
    raise AssertionError("no callback after 10 redirects")


@pytest.mark.timeout(180)
def test_the_dashboard_logs_in_by_browser_and_by_paste(dashboard: str, tmp_path: Path) -> None:
    chromium = find_chromium()
    wait_for(lambda: sum(1 for v in logins(dashboard).values() if v["url"]) == 2, timeout=60)
    page = dump_dom(chromium, dashboard, tmp_path)
    shown = [html.unescape(u) for u in re.findall(r'<a href="([^"]+)"', page)]
    assert len(shown) == 2, page
    by_name = {name: v["url"] for name, v in logins(dashboard).items()}
    assert sorted(shown) == sorted(str(u) for u in by_name.values())

    # sandbox-1: the real browser opens the URL from the page and lands on the listener.
    landed = dump_dom(chromium, str(by_name["sandbox-1"]), tmp_path)
    assert "Login complete" in landed, landed[:2000]

    # sandbox-2: its browser could not reach us; the address it landed on is pasted.
    token = re.search(r'name="token" value="([^"]+)"', page)
    assert token is not None
    address = callback_address(str(by_name["sandbox-2"]))
    posted = httpx.post(
        urljoin(dashboard, "paste"),
        data={"token": html.unescape(token.group(1)), "address": address},
        timeout=10,
    )
    assert posted.status_code == 303, posted.text

    wait_for(lambda: all(v["ok"] is not None for v in logins(dashboard).values()), timeout=60)
    final = dump_dom(chromium, dashboard, tmp_path)
    assert "all logins ended" in final
    rows = re.findall(r'<tr class="(\w+)"><td>(sandbox-\d)</td>', final)
    assert sorted(rows) == [("ok", "sandbox-1"), ("ok", "sandbox-2")], final


@pytest.mark.timeout(120)
def test_the_dashboard_refuses_what_is_not_its_own_form(dashboard: str) -> None:
    wait_for(lambda: len(logins(dashboard)) == 2, timeout=60)
    page = httpx.get(dashboard, timeout=10)
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert page.headers["cache-control"] == "no-store"
    token = re.search(r'name="token" value="([^"]+)"', page.text)
    assert token is not None
    paste = urljoin(dashboard, "paste")
    good = {"token": html.unescape(token.group(1)), "address": "<script>alert(1)</script>"}
    rebinding = httpx.get(dashboard, headers={"Host": "attacker.example"}, timeout=10)
    assert rebinding.status_code == 400
    assert httpx.post(paste, data={**good, "token": "forged"}, timeout=10).status_code == 403
    foreign = httpx.post(paste, data=good, headers={"Origin": "http://evil.example"}, timeout=10)
    assert foreign.status_code == 403
    as_json = httpx.post(paste, json=good, timeout=10)
    assert as_json.status_code == 415
    huge = httpx.post(paste, data={**good, "address": "x" * 100_000}, timeout=10)
    assert huge.status_code == 413
    # A paste that is no callback: refused by the runner, shown escaped, logins unharmed.
    assert httpx.post(paste, data=good, timeout=10).status_code == 303
    wait_for(lambda: bool(notes(dashboard)), timeout=30)
    text = httpx.get(dashboard, timeout=10).text
    assert all(html.escape(note) in text for note in notes(dashboard))
    assert "<script>" not in text
    assert all(v["ok"] is None for v in logins(dashboard).values())
