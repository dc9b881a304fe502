"""End to end in a real headless Chromium: log in, find a session by id, open it, delete it."""

import shutil

import pytest

from sessions_app.models import ExecutionSession
from sessions_app.storage import SessionId

from .conftest import missing

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        missing(
            "chromium",
            "no Debian chromium + chromium-driver here; scripts/install-system-packages.sh installs them",
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


def test_operator_finds_opens_and_deletes_a_session(browser, live_server, django_user_model):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    django_user_model.objects.create_superuser("operator", "op@example.com", "pw-Secret-123")
    target = SessionId(b"\x00\xff/_:" * 3 + b"\x2f")
    ExecutionSession.objects.create(session_id=target, agent_id=42, started_at_ns=2**64 - 1)
    ExecutionSession.objects.create(agent_id=7, started_at_ns=1)

    browser.get(f"{live_server.url}/admin/login/?next=/admin/sessions_app/executionsession/")
    browser.find_element(By.NAME, "username").send_keys("operator")
    browser.find_element(By.NAME, "password").send_keys("pw-Secret-123")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()

    search = browser.find_element(By.ID, "searchbar")
    search.send_keys(str(target)[:13])  # a partial id
    search.submit()
    WebDriverWait(browser, 10).until(lambda b: "?q=" in b.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    assert len(rows) == 1
    assert str(target) in rows[0].text

    rows[0].find_element(By.LINK_TEXT, str(target)).click()
    assert str(target) in browser.find_element(By.ID, "content").text
    browser.find_element(By.CSS_SELECTOR, "a.deletelink").click()
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.CSS_SELECTOR, "ul.messagelist"))

    assert "was deleted successfully" in browser.find_element(By.CSS_SELECTOR, "ul.messagelist").text
    # Back on the list, still searching for the id: nothing matches any more.
    assert str(target) not in browser.find_element(By.ID, "changelist").text
    assert "0 results" in browser.find_element(By.ID, "changelist").text
    assert not ExecutionSession.objects.filter(pk=target).exists()
    assert ExecutionSession.objects.count() == 1
