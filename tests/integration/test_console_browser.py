"""The console in a real headless Chromium (Debian's chromium and chromium-driver, driven by
selenium): sign in through the form, create a key and read it once, use it, revoke it, and see
the table change. The browser console must stay free of errors. Screenshots of the keys page
and the key detail page are saved (KEYGATE_SCREENSHOTS=DIR copies them there, e.g. docs/)."""
import os
import shutil
import time

import pytest

from conftest import Gate, console_gate_with, curl, wait_port

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

PASSWORD = "correct horse battery"


@pytest.fixture
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1440,1000", "--force-device-scale-factor=1"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    d = webdriver.Chrome(options=opts, service=service)
    d.set_page_load_timeout(20)
    yield d
    d.quit()


@pytest.fixture
def console_gate(tmp_path, upstream):
    g = console_gate_with(str(tmp_path), upstream.port, [("alice", "admin", PASSWORD)])
    # A store that looks like a real one: owners, limits, one revoked, one about to expire.
    g.keys = [
        g.cli_key("Orders service", "commerce", "--scope", "echo", "--rate", "100/s", "--quota", "100000/day"),
        g.cli_key("ERP nightly sync", "finance", "--scope", "suppliers.read"),
        g.cli_key("Mobile app (iOS)", "mobile-team", "--rate", "50/s"),
        g.cli_key("Partner: Acme Logistics", "partners", "--expires", "3d"),
        g.cli_key("Old reporting job", "data", "--scope", "echo"),
    ]
    g.cli("keys", "revoke", g.keys[4]["id"], "--reason", "replaced by the warehouse export")
    g.start()
    assert wait_port(g.console_port)
    for i in range(6):
        curl("-H", f"x-api-key: {g.keys[0]['key']}", g.url(f"/echo/orders/{17 + i}"))
    curl("-H", f"x-api-key: {g.keys[0]['key']}", g.url("/echo/invoices"))
    curl("-H", f"x-api-key: {g.keys[0]['key']}", g.url("/suppliers"))  # outside its scope: denied
    curl("-H", f"x-api-key: {g.keys[2]['key']}", g.url("/echo"))
    yield g
    g.stop()


def _cli_key(self, name, owner, *flags):
    import json
    return json.loads(self.cli("keys", "create", "--name", name, "--owner", owner, "--json", *flags).stdout)


Gate.cli_key = _cli_key


def severe(driver):
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def shoot(driver, tmp, name, height=None):
    # No toasts in the picture; the whole page when it is taller than the window.
    driver.execute_script("document.getElementById('toasts').replaceChildren()")
    if height:
        driver.set_window_size(1440, height)
        time.sleep(0.3)
    path = os.path.join(tmp, name)
    driver.save_screenshot(path)
    target = os.environ.get("KEYGATE_SCREENSHOTS")
    if target:
        os.makedirs(target, exist_ok=True)
        shutil.copy(path, os.path.join(target, name))
    return path


def test_console_in_a_real_browser(console_gate, browser, tmp_path):
    wait = WebDriverWait(browser, 10)
    base = f"http://127.0.0.1:{console_gate.console_port}/"
    browser.get(base)
    # Sign in through the form.
    wait.until(EC.visibility_of_element_located((By.ID, "login-user"))).send_keys("alice")
    browser.find_element(By.ID, "login-password").send_keys(PASSWORD)
    browser.find_element(By.ID, "login-submit").click()
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#keys-body tr[data-id]")))
    rows = browser.find_elements(By.CSS_SELECTOR, "#keys-body tr[data-id]")
    assert len(rows) == 5
    assert "expires soon" in browser.find_element(By.ID, "keys-body").text
    # Search narrows the table.
    browser.find_element(By.ID, "search").send_keys("acme")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#keys-body tr[data-id]")) == 1
    browser.find_element(By.ID, "search").clear()
    browser.execute_script("document.getElementById('search').dispatchEvent(new Event('input'))")
    # Create a key: it is shown once.
    browser.find_element(By.ID, "new-key").click()
    wait.until(EC.visibility_of_element_located((By.ID, "f-name"))).send_keys("Warehouse scanner")
    browser.find_element(By.ID, "f-owner").send_keys("logistics")
    browser.find_element(By.ID, "f-rate").send_keys("20/s")
    browser.find_element(By.CSS_SELECTOR, "input[type=checkbox][value=echo]").click()
    browser.find_element(By.ID, "create-submit").click()
    secret_box = wait.until(EC.visibility_of_element_located((By.ID, "new-secret")))
    secret = secret_box.get_attribute("value")
    assert secret.startswith("kg_")
    assert curl("-H", f"x-api-key: {secret}", console_gate.url("/echo"))[0] == 200
    browser.find_element(By.ID, "secret-done").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#keys-body tr[data-id]")) == 6)
    assert secret not in browser.page_source
    # Reloading cannot bring it back.
    browser.refresh()
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#keys-body tr[data-id]")))
    assert secret not in browser.page_source
    time.sleep(0.3)
    shoot(browser, str(tmp_path), "console-keys.png")
    # Open the new key, revoke it.
    row = [r for r in browser.find_elements(By.CSS_SELECTOR, "#keys-body tr[data-id]") if "Warehouse scanner" in r.text][0]
    kid = row.get_attribute("data-id")
    row.click()
    wait.until(EC.text_to_be_present_in_element((By.ID, "key-name"), "Warehouse scanner"))
    browser.find_element(By.ID, "action-revoke").click()
    wait.until(EC.visibility_of_element_located((By.ID, "revoke-reason"))).send_keys("scanner lost")
    browser.find_element(By.ID, "confirm-ok").click()
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".pill.revoked")))
    deadline = time.time() + 1.5
    while curl("-H", f"x-api-key: {secret}", console_gate.url("/echo"))[0] != 401:
        assert time.time() < deadline
        time.sleep(0.05)
    assert "scanner lost" in browser.find_element(By.ID, "settings").text
    assert "revoke" in browser.find_element(By.ID, "history").text
    # The table shows it revoked.
    browser.find_element(By.ID, "nav-keys").click()
    wait.until(lambda d: any("Warehouse scanner" in r.text and "revoked" in r.text for r in d.find_elements(By.CSS_SELECTOR, "#keys-body tr[data-id]")))
    # The detail page of a busy key, for the screenshot.
    browser.get(base + "#/keys/" + console_gate.keys[0]["id"])
    wait.until(EC.presence_of_element_located((By.ID, "usage-requests")))
    wait.until(lambda d: int(d.find_element(By.ID, "usage-requests").text) >= 8)
    time.sleep(0.3)
    shoot(browser, str(tmp_path), "console-key-detail.png", height=browser.execute_script("return document.body.scrollHeight") + 90)
    # The audit page lists the console's changes.
    browser.get(base + "#/audit")
    wait.until(EC.text_to_be_present_in_element((By.ID, "audit-table"), kid))
    assert severe(browser) == [], severe(browser)
