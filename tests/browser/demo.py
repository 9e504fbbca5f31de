"""Drive the demo page in a real browser (Debian's chromium, headless, through chromium-driver)
against a running Scoria host, and check what a person would see.

What the page shows is compared with what the host's API answers for the same input, asked
directly in the same run: the top label of each photo, the first FAQ match, the "no match" of
an unrelated question, the server's message for a file that is not an image. The run fails on
any JavaScript error the page logs. A screenshot is written after each step.

Usage: python tests/browser/demo.py --url http://127.0.0.1:3000 --screenshots DIR [--api-key KEY]
"""

import argparse
import json
import os
import sys
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PHOTOS = [("rocket.jpg", "image/jpeg"), ("grace_hopper.jpg", "image/jpeg"), ("coffee.png", "image/png"),
          ("chelsea.webp", "image/webp"), ("chelsea.gif", "image/gif"), ("chelsea.png", "image/png")]
NOT_AN_IMAGE = os.path.join(ROOT, "tests/data/README.md")
QUESTION = "remove an item from an array"
UNRELATED = "What time does the bakery on Main Street open on Sundays?"


def api(url, path, body, content_type, key):
    """`(status, JSON)` straight from the host, without the page."""
    req = urllib.request.Request(url + path, data=body, headers={"content-type": content_type})
    if key:
        req.add_header("authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


class Page:
    def __init__(self, url, shots):
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        self.wait = WebDriverWait(self.driver, 60)
        self.shots = shots
        self.step = 0
        self.errors = []
        self.driver.get(url + "/")

    def shot(self, name):
        self.step += 1
        self.driver.save_screenshot(os.path.join(self.shots, f"{self.step:02d}-{name}.png"))
        self.collect_errors()

    def collect_errors(self):
        # Network entries are the browser noting a 4xx the page asked for and shows; anything
        # else at SEVERE is a JavaScript error or a console.error.
        for entry in self.driver.get_log("browser"):
            if entry["level"] == "SEVERE" and entry.get("source") != "network":
                self.errors.append(entry["message"])

    def text(self, css):
        return self.driver.find_element(By.CSS_SELECTOR, css).text

    def until_text(self, css, *needles):
        """Wait until the element holds every needle; its text."""
        def holds(d):
            try:
                t = d.find_element(By.CSS_SELECTOR, css).text
            except Exception:
                return False
            return t if all(n in t for n in needles) else False
        try:
            return self.wait.until(holds)
        except Exception:
            where = self.driver.find_elements(By.CSS_SELECTOR, css)
            raise AssertionError(f"{css} never showed {needles}; it shows: {where[0].text if where else '(nothing)'}")

    def upload(self, path):
        box = self.driver.find_element(By.ID, "photo")
        box.send_keys(path)

    def quit(self):
        self.collect_errors()
        self.driver.quit()


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok: {what}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--screenshots", required=True)
    ap.add_argument("--api-key")
    a = ap.parse_args()
    os.makedirs(a.screenshots, exist_ok=True)
    page = Page(a.url, a.screenshots)
    try:
        run(page, a)
    finally:
        page.quit()
    check(not page.errors, f"no JavaScript errors (logged: {page.errors})")


def run(page, a):
    if a.api_key:
        status, refused = api(a.url, "/catalog", None, "application/json", None)
        reason = page.until_text("#key-reason", refused["error"]["message"])
        check(status == 401 and "refused until you give one" in reason, "without a key the page says why requests are refused")
        page.shot("key-asked")
        field = page.driver.find_element(By.ID, "api-key")
        field.send_keys("not-a-valid-key-000000" + Keys.ENTER)
        page.until_text("#key-reason", "The key you gave was refused")
        field = page.driver.find_element(By.ID, "api-key")
        field.clear()
        field.send_keys(a.api_key + Keys.ENTER)
        page.wait.until(lambda d: not d.find_element(By.ID, "key-panel").is_displayed())

    page.until_text("#host-status", "The host is ready.")
    catalog = page.until_text("#catalog", "image-classify", "faq-match", "efficientnet-lite0", "all-minilm-l6-v2")
    check("tract" in catalog and "cpu" in catalog, "the served functions and models are listed with backend and device")
    page.shot("loaded")

    for name, ctype in PHOTOS:
        path = os.path.join(ROOT, "tests/data", name)
        status, want = api(a.url, "/classify", open(path, "rb").read(), ctype, a.api_key)
        assert status == 200, want
        top = want["predictions"][0]["label"]
        page.upload(path)
        page.wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#classify-result img[alt$='" + name + "']"))
        shown = page.until_text("#classify-result", "Model efficientnet-lite0", "real, pretrained weights", "Took")
        labels = [e.text for e in page.driver.find_elements(By.CSS_SELECTOR, "#classify-result .label")]
        check(labels and labels[0] == top and len(labels) == 5, f"{name}: the page's top label is the API's, {top!r} ({labels})")
        check("in the function" in shown and "serving (queue, body, instance)" in shown, f"{name}: the time is split into host and function")
        page.shot(f"classify-{name.replace('.', '-')}")

    status, want = api(a.url, "/faq", json.dumps({"question": QUESTION}).encode(), "application/json", a.api_key)
    first = want["matches"][0]["question"]
    box = page.driver.find_element(By.ID, "question")
    box.clear()
    box.send_keys(QUESTION + Keys.ENTER)
    page.until_text("#faq-result", first)
    shown = page.driver.find_elements(By.CSS_SELECTOR, "#faq-result .match-question")
    check(shown and shown[0].text == first, f"the first FAQ match is the API's: {first!r}")
    check(page.driver.find_elements(By.CSS_SELECTOR, "#faq-result .answer"), "the match's answer is shown")
    page.shot("faq-match")

    status, want = api(a.url, "/faq", json.dumps({"question": UNRELATED}).encode(), "application/json", a.api_key)
    check(want.get("no_match") is True, "the API finds no match for the unrelated question")
    box.clear()
    box.send_keys(UNRELATED + Keys.ENTER)
    page.until_text("#faq-result", "No match")
    page.shot("faq-no-match")

    status, refused = api(a.url, "/classify", open(NOT_AN_IMAGE, "rb").read(), "text/markdown", a.api_key)
    page.upload(NOT_AN_IMAGE)
    shown = page.until_text("#classify-result .error", refused["error"]["message"])
    check(status == 415 or status == 400, f"a file that is not an image shows the server's message: {shown!r}")
    page.shot("classify-not-an-image")

    example = page.driver.find_element(By.CSS_SELECTOR, "button.example")
    example.click()
    page.wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#faq-result .match-question"))
    check(page.driver.find_element(By.ID, "question").get_attribute("value") == example.text, "an example question is asked by its button")

    # Keyboard: the question field, its button and the examples are reached with Tab.
    unlabelled = page.driver.execute_script(
        "return [...document.querySelectorAll('input')].filter(i => !i.labels || !i.labels.length).map(i => i.id)")
    check(not unlabelled, f"every input has a label ({unlabelled})")
    box.click()
    box.send_keys(Keys.TAB)
    check(page.driver.switch_to.active_element.text == "Ask", "Tab moves from the question to its button")

    # A phone-sized viewport: no sideways scrolling.
    page.driver.set_window_size(390, 844)
    overflow = page.driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    check(overflow <= 0, f"nothing overflows a 390 px viewport ({overflow} px)")
    page.shot("phone")
    page.driver.set_window_size(1280, 1000)


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
