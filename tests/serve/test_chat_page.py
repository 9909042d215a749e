"""The chat page at ``/`` in headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by Selenium):
a message typed in gets a streamed reply, the conversation is kept, Stop stops, errors are shown."""

from __future__ import annotations

import shutil
import time

import pytest
from live_server import API_KEY, serve

from scratchllm.generation import generate_text
from scratchllm.model import GPTModel
from scratchllm.tokenizer.chat import tokenizer_chat
from serving_doubles import spiky_model

REPLY_TOKENS = 30


class SlowGPT(GPTModel):
    """The tiny model, slowed to 25 ms a forward pass so that a reply visibly streams."""

    def forward(self, *args, **kwargs):
        time.sleep(0.025)
        return super().forward(*args, **kwargs)


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    binary, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip("headless Chromium needs Debian's chromium and chromium-driver packages")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def wait_for(condition, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def test_chat_page_streams_keeps_the_conversation_stops_and_shows_errors(browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    model = spiky_model("gpt", context_length=256)
    model.__class__ = SlowGPT
    server = serve(model=model, max_tokens_limit=REPLY_TOKENS)
    tok = server.tokenizer
    el = lambda name: browser.find_element(By.ID, name)  # noqa: E731
    bubbles = lambda: [b.text for b in browser.find_elements(By.CSS_SELECTOR, ".assistant")]  # noqa: E731
    try:
        browser.get(server.url + "/")
        wait_for(lambda: "401" in el("error").text)  # the API key is required: the page says so
        el("key").send_keys(API_KEY + Keys.TAB)
        wait_for(lambda: "tiny-test" in el("model").text)
        el("temperature").clear()
        el("temperature").send_keys("0")

        expected = generate_text(model, tok, tokenizer_chat(tok, [{"role": "user", "content": "Hi there"}]),
                                 max_new_tokens=REPLY_TOKENS)
        el("input").send_keys("Hi there" + Keys.ENTER)
        partial = wait_for(lambda: bubbles() and bubbles()[-1] and not el("send").is_enabled() and bubbles()[-1])
        assert expected.startswith(partial.strip()) and len(partial) < len(expected)  # text arrived in pieces
        wait_for(lambda: el("send").is_enabled())
        assert bubbles() == [expected.strip()]  # .text trims surrounding spaces

        history = [
            {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": expected},
            {"role": "user", "content": "More please"},
        ]
        second = generate_text(model, tok, tokenizer_chat(tok, history), max_new_tokens=REPLY_TOKENS)
        el("input").send_keys("More please" + Keys.ENTER)
        wait_for(lambda: el("send").is_enabled() and len(bubbles()) == 2 and bubbles()[1] == second.strip())

        el("input").send_keys("Stop soon" + Keys.ENTER)
        wait_for(lambda: len(bubbles()) == 3 and bubbles()[2])
        el("stop").click()
        wait_for(lambda: bubbles()[2].endswith("[stopped]"))
        wait_for(lambda: server.engine.stats()["running"] == 0, timeout=5)  # the server freed the slot

        el("temperature").clear()
        el("temperature").send_keys("5")
        el("input").send_keys("Too hot" + Keys.ENTER)
        wait_for(lambda: "400: Invalid value for 'temperature'" in el("error").text)
        assert len(bubbles()) == 3  # the failed turn left no empty reply behind
    finally:
        server.stop()
