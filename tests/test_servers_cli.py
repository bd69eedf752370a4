"""`assistant serve` and `assistant run --http` as processes: the listening lines, safe defaults, exit codes, and
the status page in a real headless browser (Debian's chromium) after a spoken wake cycle."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from speechdata.assets import KWS_EN
from speechdata.audio import load_clip as load_mono16k
from speechdata.audio import silence
from tests.conftest import REPO
from tests.servers_fixture import JFK


class Proc:
    """A `python -m assistant ...` process whose stdout/stderr lines are collected by threads."""

    def __init__(self, args: list[str], cwd: Path, stdin: bool = False) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        env.pop("CREDENTIALS_DIRECTORY", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "assistant", *args], cwd=cwd, env=env,
                                     stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out: list[str] = []
        self.err: list[str] = []
        self.threads = [threading.Thread(target=self._read, args=(s, sink), daemon=True)
                        for s, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self.threads:
            t.start()

    @staticmethod
    def _read(stream: Any, sink: list[str]) -> None:
        for line in iter(stream.readline, b""):
            sink.append(line.decode("utf-8", "replace"))

    def wait_for(self, pattern: str, stream: str = "err", timeout: float = 120) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(getattr(self, stream)):
                if match := re.search(pattern, line):
                    return match
            if self.proc.poll() is not None:
                time.sleep(0.3)
                for line in list(getattr(self, stream)):
                    if match := re.search(pattern, line):
                        return match
                raise AssertionError(f"exited {self.proc.returncode} before {pattern!r}:\n{''.join(self.err)}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {pattern!r}:\n{''.join(self.err)}")

    def wait(self, timeout: float = 120) -> int:
        """The exit code of a process expected to end by itself."""
        code = self.proc.wait(timeout)
        for t in self.threads:
            t.join(5)
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            for t in self.threads:
                t.join(5)


@pytest.fixture
def workdir(tmp_path: Path, tiny_llm: Path) -> Path:
    (tmp_path / "keywords.txt").write_text("FELLOW AMERICANS\n", encoding="utf-8")
    (tmp_path / "config.yaml").write_text(
        f"wake:\n  keywords_file: keywords.txt\n  model_dir: {KWS_EN}\n"
        f"llm:\n  model_dir: {tiny_llm}\n  max_new_tokens: 12\n  threads: 1\n", encoding="utf-8")
    return tmp_path


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def test_serve_logs_listening_answers_and_stops_on_sigterm(workdir: Path) -> None:
    proc = Proc(["serve", "--http", "127.0.0.1:0", "--wyoming", "127.0.0.1:0"], workdir)
    try:
        http = proc.wait_for(r"listening on http://127\.0\.0\.1:(\d+)")
        proc.wait_for(r"listening on tcp://127\.0\.0\.1:(\d+)")
        models = get(f"http://127.0.0.1:{http.group(1)}/v1/models")
        assert models["data"][0]["object"] == "model"
        assert get(f"http://127.0.0.1:{http.group(1)}/status")["voice"] is False
    finally:
        code = proc.stop()
    assert code == 0, "".join(proc.err)


def test_lan_address_needs_a_token_or_an_explicit_opt_out(workdir: Path) -> None:
    proc = Proc(["serve", "--http", "0.0.0.0:0"], workdir)
    assert proc.wait() == 3
    err = "".join(proc.err)
    assert "not a loopback address" in err and "allow_unauthenticated_lan" in err
    proc = Proc(["serve", "--wyoming", "0.0.0.0:0"], workdir)
    assert proc.wait() == 3  # Wyoming has no auth: a token does not help, only the opt-out
    config = workdir / "config.yaml"
    config.write_text(config.read_text() + "servers:\n  allow_unauthenticated_lan: true\n", encoding="utf-8")
    proc = Proc(["serve", "--http", "0.0.0.0:0"], workdir)
    try:
        proc.wait_for(r"NO authentication")
        proc.wait_for(r"listening on http://0\.0\.0\.0:\d+")
    finally:
        assert proc.stop() == 0


def test_serve_usage_errors(workdir: Path) -> None:
    proc = Proc(["serve"], workdir)
    assert proc.wait() == 3 and "nothing to serve" in "".join(proc.err)
    proc = Proc(["serve", "--http", "localhost"], workdir)
    assert proc.wait() == 2 and "HOST:PORT" in "".join(proc.err)


def _pcm(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def _browse(url: str, wait_text: str, shot: Path, tmp_path: Path) -> str:
    """Load `url` in headless chromium (selenium + chromedriver), wait until the page shows `wait_text` and its
    CPU figure (both arrive over SSE), screenshot it, return the live DOM."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1000,700"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or "chromedriver"))
    try:
        driver.set_page_load_timeout(60)
        driver.get(url)
        WebDriverWait(driver, 60).until(
            lambda d: wait_text in d.find_element("id", "recent").text
            and d.find_element("id", "cpu").text not in ("", "–"))
        # The text box asks the model (POST /v1/chat/completions); the answer and the exchange row appear.
        driver.find_element("id", "question").send_keys("What is the capital of France?")
        driver.find_element("css selector", "#ask button").click()
        WebDriverWait(driver, 120).until(lambda d: d.find_element("id", "answer").text not in ("", "…"))
        answer = driver.find_element("id", "answer").text
        assert not answer.startswith("error"), answer
        question = "What is the capital of France?"
        WebDriverWait(driver, 60).until(lambda d: question in d.find_element("id", "recent").text)
        driver.save_screenshot(str(shot))
        return driver.execute_script("return document.documentElement.outerHTML")
    finally:
        driver.quit()


NO_BROWSER = shutil.which("chromium") is None or shutil.which("chromedriver") is None


@pytest.mark.skipif(NO_BROWSER, reason="needs Debian's chromium and chromium-driver (apt-get install)")
def test_status_page_in_chromium_after_a_wake_cycle(workdir: Path, tmp_path: Path) -> None:
    """The daemon hears JFK on stdin (wake, transcript, reply) with --http; headless chromium then loads the page,
    which fills itself from /events (SSE) and shows the state, the exchange with its latencies, CPU and RSS."""
    proc = Proc(["run", "--input", "-", "--json", "--http", "127.0.0.1:0"], workdir, stdin=True)
    try:
        port = int(proc.wait_for(r"listening on http://127\.0\.0\.1:(\d+)").group(1))
        assert proc.proc.stdin is not None
        proc.proc.stdin.write(_pcm(np.concatenate([load_mono16k(JFK), silence(3.0)])))
        proc.proc.stdin.flush()
        proc.wait_for(r'"event": "reply"', stream="out")
        proc.wait_for(r'"state": "idle"', stream="out")
        status = get(f"http://127.0.0.1:{port}/status")
        assert status["voice"] and status["recent"][0]["source"] == "voice" and status["recent"][0]["reply_ms"]
        shot = tmp_path / "status-page.png"
        dom = _browse(f"http://127.0.0.1:{port}/", status["recent"][0]["heard"], shot, tmp_path)
    finally:
        if proc.proc.stdin is not None:
            proc.proc.stdin.close()
        code = proc.stop()
    assert code == 0, "".join(proc.err)
    heard = status["recent"][0]["heard"]
    assert '<span id="state" class="idle">idle</span>' in dom, dom[:3000]
    assert heard in dom and "voice" in dom and "<td>api</td>" in dom
    assert re.search(r'id="cpu">[\d.]+<', dom) and re.search(r'id="rss">[\d.]+<', dom)
    assert re.search(r"<td class=\"num\">\d+ ms</td>", dom)
    assert shot.is_file() and shot.stat().st_size > 1000  # kept under the pytest tmp dir as the artifact
