#!/usr/bin/python3
"""The management page in a real browser (issue 19), run by tests/ui.rs.

Debian's chromium, headless, driven by chromium-driver through python3-selenium
(`make test-deps` installs all three). Usage:

    browser.py URL TOKEN SCREENSHOT NODE[,NODE...] OWN_NODE

against a `chute serve` that lets no address in (the test hook), holds the
nodes' snapshots and runs with OWN_NODE's key and paths. The browser is turned
away, logs in with the token, reads the page (every node, sizes, ages), saves a
screenshot, clicks "Take new snapshot", follows the self-refreshing progress
page to its end, and finds the new snapshot listed on the page. Any failure, a
missing browser included, exits 1 with one line saying what went wrong.
"""

import re
import signal
import sys
import tempfile
import time

# A hung browser must fail the test, not hold it.
signal.signal(signal.SIGALRM, lambda *_: fail("gave up after 600 s"))
signal.alarm(600)


def fail(why):
    print(f"browser: {why}", file=sys.stderr)
    sys.exit(1)


try:
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
except ImportError as e:
    fail(f"no python3-selenium ({e}): run make test-deps as root")


def body(driver):
    """The rendered text of the page, or '' while it is being replaced."""
    try:
        return driver.find_element(By.TAG_NAME, "body").text
    except WebDriverException:
        return ""


def wait_for(driver, what, test, secs, reload=False):
    """The page's text once `test` holds for it (reloading it if asked)."""
    deadline = time.monotonic() + secs
    while True:
        text = body(driver)
        if test(text):
            return text
        if time.monotonic() > deadline:
            fail(f"no {what} within {secs} s; the page says:\n{text}")
        time.sleep(0.5)
        if reload:
            driver.refresh()


def main():
    if len(sys.argv) != 6:
        fail("usage: browser.py URL TOKEN SCREENSHOT NODE[,NODE...] OWN_NODE")
    url, token, shot, nodes, own = sys.argv[1:]
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="chute-browser-")
    for a in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1024,900",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(a)
    try:
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    except WebDriverException as e:
        fail(f"cannot start chromium through chromedriver: {e.msg}")
    try:
        driver.set_page_load_timeout(60)
        driver.get(url + "/")
        text = body(driver)
        if "This node" in text or "Nodes" in text:
            fail("the page let an address in that no rule admits")
        driver.find_element(By.LINK_TEXT, "log in").click()
        driver.find_element(By.NAME, "token").send_keys(token)
        driver.find_element(By.CSS_SELECTOR, 'form[action="/login"] button').click()
        # The own list is read in the background: reload until it is shown.
        text = wait_for(driver, "own snapshot list", lambda t: "Newest snapshot:" in t, 60, reload=True)
        for n in nodes.split(",") + [f"This node: {own}"]:
            if n not in text:
                fail(f"{n!r} is not on the page:\n{text}")
        if not re.search(r"\d+(\.\d+)? (B|KiB|MiB)", text):
            fail(f"no size on the page:\n{text}")
        if not re.search(r"\(\d+[smhd]( \d+[smh])? ago\)", text):
            fail(f"no age on the page:\n{text}")
        if not driver.save_screenshot(shot):
            fail(f"cannot save the screenshot to {shot}")
        driver.find_element(By.XPATH, '//button[text()="Take new snapshot"]').click()
        # The progress page refreshes itself until the sink ends.
        text = wait_for(driver, "end of the sink", lambda t: "Ended with status" in t, 300)
        if "Ended with status 0" not in text:
            fail(f"the sink failed:\n{text}")
        m = re.search(r"snapshot ([0-9a-f]{8}) saved", text)
        if not m:
            fail(f"no summary line:\n{text}")
        driver.find_element(By.LINK_TEXT, "back to the page").click()
        wait_for(driver, f"snapshot {m.group(1)} on the page", lambda t: m.group(1) in t, 60, reload=True)
        print(f"browser: logged in, saw {nodes} and {own}, took snapshot {m.group(1)}")
    finally:
        driver.quit()


main()
