"""The page at / in a real browser: Debian's Chromium, headless, driven by Selenium through its
chromedriver, against a real `make serve` (tiny export).

A fake microphone plays a WAV of the recorded sentences with pauses: the page shows one utterance
element per spoken sentence, each with its label, "speaking..." in between, and is driven from the
keyboard. A recording chosen through #file gives the utterances `client/infer.py --stream FILE --json`
gives (boundaries within one VAD window, the same labels, probabilities within 1e-3), and its downloads
hold them. Where the edge asks for client keys, the page says so without one and streams with one.
The page keeps to its Content-Security-Policy. Each test writes a screenshot (SER_SCREENSHOTS=DIR
keeps them there too: docs/browser.png is one). Skipped, with how to get it, where Chromium is missing.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ser_triton.client.timeline import subtitles
from ser_triton.core import contract
from ser_triton.core.result import Result, Segment
from ser_triton.serving.edge import PAGE_HEADERS
from ser_triton.serving.steps.segmentation import WINDOW
from tests.conftest import REPO_ROOT, require, required_tools
from tests.socket_helpers import Served
from tests.test_stream import joined

pytestmark = pytest.mark.server
RATE = contract.SAMPLE_RATE
FLAGS = ("--headless=new", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
         "--autoplay-policy=no-user-gesture-required", "--window-size=1200,1400")
"""Headless, no network of its own, the microphone allowed and faked (--use-file-for-fake-audio-capture)."""
SCREENSHOTS = "SER_SCREENSHOTS"


def chromium(tmp: Path, microphone: Path | None = None):
    """A headless Chromium under Selenium (the system's chromedriver: nothing is downloaded), its
    downloads into tmp/downloads; skipped (or failed, where this run requires chromium) if it cannot start."""
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = require("chromium")
    for flag in FLAGS + ((("--no-sandbox",) if os.geteuid() == 0 else ())):  # root: no sandbox is possible
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp / 'profile'}")
    if microphone is not None:
        options.add_argument(f"--use-file-for-fake-audio-capture={microphone}%noloop")  # played once, then silence
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    except WebDriverException as error:
        reason = f"Chromium did not start under chromedriver: {error.msg}"
        if "chromium" in required_tools():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    (tmp / "downloads").mkdir(exist_ok=True)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp / "downloads")})
    return driver


@pytest.fixture(scope="module")
def served(tiny_repository, tmp_path_factory):
    require("chromium")  # before the server starts
    launched = Served(tiny_repository, tmp_path_factory.mktemp("browser"))
    yield launched
    launched.close()


@pytest.fixture(scope="module")
def conversation(sentences):
    """The four recorded sentences with pauses, as a speaker would say them to a microphone."""
    return joined([1.0, *[p for s in sentences for p in (s, 1.5)], 1.0])


def status(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, "status").text


def wait_for(condition, seconds: float, what: str):
    """Poll until `condition()` is truthy (a bound, not a timing check); its value."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what}: not within {seconds:g} s"
        time.sleep(0.2)
    return value


def utterance_elements(driver) -> list[dict]:
    """Each finished utterance's element, as its data-* attributes."""
    return driver.execute_script("""return [...document.querySelectorAll('[data-event="utterance"]')]
        .map((element) => Object.fromEntries([...element.attributes].filter((a) => a.name.startsWith('data-'))
        .map((a) => [a.name.slice(5), a.value])));""")


def page_problems(driver) -> list[str]:
    """What the page logged as an error (a refused script or style, a failed load, an exception)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def screenshot(driver, tmp: Path, name: str) -> Path:
    path = tmp / f"{name}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get(SCREENSHOTS):
        shutil.copy(path, Path(os.environ[SCREENSHOTS]) / path.name)
    return path


@pytest.mark.timeout(600)
def test_the_microphone_gives_one_utterance_element_per_spoken_utterance(served, conversation, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    audio, truth = conversation
    microphone = tmp_path / "microphone.wav"
    soundfile.write(microphone, audio, RATE, subtype="PCM_16")
    driver = chromium(tmp_path, microphone)
    try:
        driver.get(f"http://{served.http_url}/")
        assert status(driver) == "ready"
        labelled = driver.execute_script("""return ['mic', 'file', 'key', 'download-jsonl', 'download-vtt']
            .map((id) => document.getElementById(id))
            .map((c) => (c.labels?.length ? c.labels[0] : c).textContent.trim());""")
        assert all(labelled), labelled  # every control has a name a screen reader says
        driver.execute_script("""window.speaking = [];
            new MutationObserver(() => window.speaking.push(!document.getElementById('speaking').hidden))
                .observe(document.getElementById('speaking'), {attributes: true});""")
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys(Keys.TAB)  # from the keyboard: the microphone's button is the first stop
        assert driver.switch_to.active_element.get_attribute("id") == "mic"
        driver.switch_to.active_element.send_keys(Keys.ENTER)
        assert wait_for(lambda: status(driver) == "listening", 30, "listening")
        wait_for(lambda: len(utterance_elements(driver)) == len(truth), 120, "an element per spoken sentence")
        driver.find_element(By.ID, "mic").send_keys(Keys.SPACE)  # stop: the rest is answered, then done
        wait_for(lambda: status(driver) != "listening", 60, "done")
        assert status(driver) == "done", status(driver)
        elements = utterance_elements(driver)
        assert len(elements) == len(truth)  # nothing more came of the silence after the WAV
        for element in elements:
            assert element["label"] in contract.LABELS and float(element["start"]) < float(element["end"])
        assert [float(e["start"]) for e in elements] == sorted(float(e["start"]) for e in elements)
        seen = driver.execute_script("return window.speaking;")
        assert seen.count(True) >= len(truth) and seen[-1] is False  # "speaking..." came and went each time
        screenshot(driver, tmp_path, "browser-microphone")
        assert not page_problems(driver), page_problems(driver)
    finally:
        driver.quit()


def cli_events(served, path: Path, *extra: str) -> list[dict]:
    done = subprocess.run([sys.executable, str(REPO_ROOT / "client" / "infer.py"), "--stream", str(path), "--json",
                           "--url", served.grpc_url, *extra], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def recording(audio: np.ndarray, path: Path, rate: int, channels: int) -> Path:
    """The audio as a file of another rate and channel count, as a user's recording would be."""
    import soxr

    resampled = soxr.resample(audio, RATE, rate)
    soundfile.write(path, np.repeat(resampled[:, None], channels, axis=1) * (0.9 if channels > 1 else 1.0), rate)
    return path


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name, rate, channels, atol", [("call.wav", RATE, 1, 1e-3), ("call-22k.wav", 22050, 1, 5e-3),
                                                        ("call.flac", 44100, 2, 5e-3)])
def test_a_chosen_file_gives_the_utterances_of_the_command_line(served, conversation, tmp_path, name, rate, channels,
                                                                 atol):
    """The browser decodes the file and resamples it (OfflineAudioContext), the command line with
    libsndfile and soxr: the same utterances, boundaries within one VAD window, the same labels, and
    the same probabilities: within 1e-3 at 16 kHz; other rates go through two resamplers (Chromium's
    and soxr), whose samples differ, and so do the tiny model's answers, by up to 5e-3. The page's
    elements and downloads hold the same."""
    from selenium.webdriver.common.by import By

    path = recording(conversation[0], tmp_path / name, rate, channels) if rate != RATE else tmp_path / name
    if rate == RATE:
        soundfile.write(path, conversation[0], RATE, subtype="FLOAT")
    # the page mixes a file's channels into one stream: the command line's --channels mix (split is its default
    # for a 2-channel file: one speaker a channel)
    expected = [e for e in cli_events(served, path, "--channels", "mix") if e["event"] == "utterance"]
    assert len(expected) == len(conversation[1])
    driver = chromium(tmp_path)
    try:
        driver.get(f"http://{served.http_url}/")
        driver.find_element(By.ID, "file").send_keys(str(path))
        wait_for(lambda: status(driver) not in ("ready", "listening"), 180, "the file's answers")
        assert status(driver) == "done", status(driver)
        driver.find_element(By.ID, "download-jsonl").click()
        driver.find_element(By.ID, "download-vtt").click()
        jsonl, vtt = tmp_path / "downloads" / "emotions.jsonl", tmp_path / "downloads" / "emotions.vtt"
        wait_for(lambda: jsonl.is_file() and vtt.is_file(), 30, "the downloads")
        events = [json.loads(line) for line in jsonl.read_text().splitlines()]
        elements = utterance_elements(driver)
        screenshot(driver, tmp_path, f"browser-{Path(name).suffix[1:]}")
        assert not page_problems(driver), page_problems(driver)
    finally:
        driver.quit()
    utterances = [e for e in events if e["event"] == "utterance"]
    assert len(utterances) == len(expected) == len(elements)
    for got, want, element in zip(utterances, expected, elements):
        assert abs(got["start_sample"] - want["start_sample"]) <= WINDOW, (got, want)
        assert abs(got["end_sample"] - want["end_sample"]) <= WINDOW, (got, want)
        assert got["label"] == want["label"]
        np.testing.assert_allclose(list(got["probabilities"].values()), list(want["probabilities"].values()),
                                   atol=atol)
        assert set(want) <= set(got)  # every key the command line prints
        assert (element["label"], float(element["start"]), float(element["end"])) == \
            (got["label"], got["start"], got["end"])
    segments = [Segment(e["start"], e["end"], e["label"], e["probabilities"], e["transcript"]) for e in utterances]
    assert vtt.read_text() == subtitles(Result("", "", {}, "", 0.0, segments=segments))  # as --subtitles writes them


@pytest.mark.timeout(300)
def test_a_recording_dropped_on_the_page_is_sent_as_a_chosen_one(served, conversation, tmp_path):
    """The drop zone takes a file as the picker does (a drop event carrying it, as a drag from the desktop
    gives it): the same utterances."""
    import base64

    path = tmp_path / "call.wav"
    soundfile.write(path, conversation[0], RATE, subtype="PCM_16")
    driver = chromium(tmp_path)
    try:
        driver.get(f"http://{served.http_url}/")
        driver.execute_script("""const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
            const carried = new DataTransfer();
            carried.items.add(new File([bytes], 'call.wav', {type: 'audio/wav'}));
            const zone = document.getElementById('drop');
            zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: carried, bubbles: true, cancelable: true}));
            zone.dispatchEvent(new DragEvent('drop', {dataTransfer: carried, bubbles: true, cancelable: true}));""",
                              base64.b64encode(path.read_bytes()).decode())
        wait_for(lambda: status(driver) not in ("ready", "listening"), 180, "the dropped file's answers")
        assert status(driver) == "done", status(driver)
        assert len(utterance_elements(driver)) == len(conversation[1])
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def keyed(tiny_repository, tmp_path_factory):
    """make serve with client keys at the edge."""
    require("chromium")
    tmp = tmp_path_factory.mktemp("browser-keyed")
    key = "browser-key-" + "k" * 20
    (tmp / "keys.txt").write_text(key + "\n")
    launched = Served(tiny_repository, tmp, "--client-keys", str(tmp / "keys.txt"))
    launched.key = key
    yield launched
    launched.close()


@pytest.mark.timeout(600)
def test_the_page_says_a_key_is_needed_and_streams_with_one(keyed, conversation, tmp_path):
    from selenium.webdriver.common.by import By

    path = tmp_path / "call.wav"
    soundfile.write(path, conversation[0], RATE, subtype="PCM_16")
    driver = chromium(tmp_path)
    try:
        driver.get(f"http://{keyed.http_url}/")
        driver.find_element(By.ID, "file").send_keys(str(path))
        wait_for(lambda: status(driver) not in ("ready", "listening"), 60, "the refusal")
        assert "needs a valid client key" in status(driver), status(driver)
        assert not utterance_elements(driver)
        driver.find_element(By.ID, "key").send_keys(keyed.key)
        driver.find_element(By.ID, "file").send_keys(str(path))
        wait_for(lambda: status(driver) not in ("ready", "listening") and "client key" not in status(driver), 180,
                 "the answers with the key")
        assert status(driver) == "done" and len(utterance_elements(driver)) == len(conversation[1])
    finally:
        driver.quit()


def test_the_page_keeps_to_its_content_security_policy(served, tmp_path):
    """Its own scripts and a socket to its own edge, nothing else: a request to any other origin is
    refused by the browser (a policy violation), where one to the edge goes (the positive control)."""
    import urllib.request

    headers = urllib.request.urlopen(f"http://{served.http_url}/", timeout=30).headers
    assert headers["Content-Security-Policy"] == PAGE_HEADERS["Content-Security-Policy"]
    driver = chromium(tmp_path)
    try:
        driver.get(f"http://{served.http_url}/")
        outcome = driver.execute_async_script("""const done = arguments[arguments.length - 1];
            const violations = [];
            document.addEventListener('securitypolicyviolation', (e) => violations.push(e.violatedDirective));
            const tries = [fetch('/v2/health/ready').then((r) => 'own: ' + r.status),
                           fetch('http://127.0.0.1:9/elsewhere').then(() => 'other: fetched', () => 'other: refused')];
            Promise.all(tries).then((results) => setTimeout(() => done({results, violations}), 200));""")
        assert outcome["results"] == ["own: 200", "other: refused"]
        assert outcome["violations"] == ["connect-src"]
    finally:
        driver.quit()
