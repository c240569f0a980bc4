"""The console and live logs end to end, on one local deployment (moto's server, real agents, the
replayed market, the gateway) shared by both tests of this module:

- `spotrun logs JOB TASK --follow`, a real process, prints a running program's lines within seconds;
- headless Chromium (Debian's, driven by Selenium through /usr/bin/chromedriver; `make browser`
  installs both) opens the console page, finds a running job, opens it, sees its tasks, timeline, log
  and costs, presses Suspend and then Resume and sees the job suspend and resume, and the job then
  succeeds with the right result;
- a gang task (`nodes: 2`, the ring all-reduce over TCP, `signal`) on the same page: its row says it is
  a gang, its ranks' two instances are named, a checkpoint asked from its row's button shows as a gang
  checkpoint of both ranks, and it succeeds with the uninterrupted run's result.
Each page must fit the 1400 px window (no horizontal scroll: the costs panel once overflowed it).
Screenshots go to bench/results/console/ (committed).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from spotrun.domain.model import JobState
from spotrun_local import demo
from spotrun_local.deployment import LocalDeployment, start_steady
from spotrun_local.programs import ring
from spotrun_local.runtime import REPO
from tests import support
from tests.local.support import LogFollower, submit, ticker_job

pytestmark = pytest.mark.slow

SCREENSHOTS = REPO / "bench" / "results" / "console"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1400,1900")
# A line is on the follower's screen within this long of being printed (shipped every second, read every
# half second); what it is in practice is measured by `make bench-logs` (bench/results/log_latency.json).
LOG_LATENCY_BOUND = 8.0


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    local = start_steady(tmp_path_factory.mktemp("console") / "run")
    try:
        yield local
    finally:
        local.stop()


# each look asks moto's server or the browser: twice a second is enough
wait_for = partial(support.wait_for, every=0.5)


def test_logs_follow_shows_a_running_programs_output_within_seconds(deployment: LocalDeployment) -> None:
    job_id = submit(deployment, ticker_job(20, 0.5))
    with LogFollower(deployment, job_id, 0, poll_seconds=0.5) as follower:
        arrivals = follower.arrivals
        wait_for(lambda: len([a for a in arrivals if a[1].startswith("tick ")]) >= 8, 120, "eight ticks")
        assert follower.process.poll() is None, "the follower runs while the program does"
        code = follower.wait(timeout=120)  # the task ends: so does following, once its last lines are in
        assert code == 0, follower.errors()
    ticks = [(arrived - float(line.split()[2]), int(line.split()[1])) for arrived, line in arrivals
             if line.startswith("tick ")]
    assert [n for _, n in ticks] == list(range(len(ticks))), "every line, in order, once"
    assert max(latency for latency, _ in ticks) < LOG_LATENCY_BOUND, ticks
    program = [line for _, line in arrivals if not line.startswith("[spotrun] ")]
    assert program[-1].startswith("done after "), "its last line too, after it ended"
    agent = [line for _, line in arrivals if line.startswith("[spotrun] ")]
    assert any("runs on instance" in line for line in agent), "the agent's own lines are in the log too"
    assert any("the program ended (exit code 0)" in line for line in agent)
    assert deployment.runtime.guard.denials == [], "the agent shipped its log with its task credentials alone"


class Page:
    """The console page in a real browser, as a person uses it."""

    def __init__(self, driver: Any):
        from selenium.webdriver.common.by import By

        self.driver, self.by = driver, By

    def fresh(self, read: Any) -> Any:
        """`read()` again if the page re-rendered between finding an element and reading it (it refreshes
        every few seconds, replacing its elements)."""
        from selenium.common.exceptions import StaleElementReferenceException

        for _ in range(5):
            try:
                return read()
            except StaleElementReferenceException:
                time.sleep(0.1)
        return read()

    def text_of(self, element_id: str) -> str:
        return str(self.fresh(lambda: self.driver.find_element(self.by.ID, element_id).text))

    def widget_text(self) -> str:
        return self.text_of("widget")

    def wait_text(self, text: str, seconds: float = 60) -> None:
        wait_for(lambda: text in self.widget_text(), seconds, f"{text!r} in the console")

    def click(self, label: str, confirm: bool = False, where: str = "widget") -> None:
        xpath = f"//div[@id='{where}']//a[normalize-space()='{label}']"
        wait_for(lambda: self.driver.find_elements(self.by.XPATH, xpath), 60, f"a {label!r} button")
        self.fresh(lambda: self.driver.find_element(self.by.XPATH, xpath).click())
        if confirm:
            alert = wait_for(lambda: self._alert(), 10, "the confirmation")
            alert.accept()

    def _alert(self) -> Any:
        from selenium.common.exceptions import NoAlertPresentException

        try:
            return self.driver.switch_to.alert
        except NoAlertPresentException:
            return None

    def job_state(self) -> str:
        def read() -> str:
            found = self.driver.find_elements(self.by.XPATH, "//div[@id='widget']//h2/span[contains(@class,'state')]")
            return str(found[0].text) if found else ""

        return str(self.fresh(read))

    def fits(self) -> bool:
        """Nothing wider than the window: the page does not scroll sideways."""
        return bool(self.driver.execute_script(
            "return document.documentElement.scrollWidth <= document.documentElement.clientWidth"))

    def shoot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        assert self.driver.save_screenshot(str(SCREENSHOTS / name))


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("Debian's chromium and chromium-driver are not installed: `make browser` installs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)  # no Selenium Manager
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def test_a_person_steers_a_running_job_from_the_console_in_a_real_browser(deployment: LocalDeployment,
                                                                           browser: Any) -> None:
    limit = 40_000_000
    spec = demo.job_spec(limit, 2)
    spec["name"] = "primes-console"
    job_id = submit(deployment, spec)
    store = deployment.runtime.cp.store
    page = Page(browser)

    browser.get(deployment.gateway.ui_url)
    page.wait_text(job_id)  # the jobs widget lists it
    wait_for(lambda: store.get_job(job_id).state == JobState.RUNNING, 120, "the job to run")
    page.wait_text("RUNNING")
    page.shoot("01-jobs.png")

    page.click("primes-console")  # open it
    page.wait_text("tasks")
    for shown in ("timeline", "costs and statistics", "spot cost", "on demand would cost", "log of task",
                  "attempt", "Submitted by local with 2 tasks"):
        page.wait_text(shown)
    page.wait_text("% done", 120)  # the program's own lines, from its attempt's log
    page.shoot("02-job-running.png")

    page.click("Suspend", confirm=True)
    page.wait_text("suspend requested")
    wait_for(lambda: page.job_state() == "SUSPENDED", 180, "the console to show the job SUSPENDED")
    assert store.get_job(job_id).state == JobState.SUSPENDED
    page.wait_text("Suspend requested by console spotrun-local")
    page.shoot("03-job-suspended.png")

    page.click("Resume", confirm=True)
    page.wait_text("resume requested")
    wait_for(lambda: page.job_state() == "RUNNING", 180, "the console to show the job RUNNING again")
    page.wait_text("restored checkpoint", 180)  # its tasks go on from the checkpoints they took at suspend
    page.shoot("04-job-resumed.png")

    page.click("log")  # the first task's log, in a popup
    wait_for(lambda: "attempt" in page.text_of("popup-body"), 30, "the log popup")
    page.shoot("05-task-log.png")
    browser.find_element(page.by.ID, "popup-close").click()

    wait_for(lambda: store.get_job(job_id).state in (JobState.SUCCEEDED, JobState.FAILED), 400, "the job to finish")
    wait_for(lambda: page.job_state() == "SUCCEEDED", 30, "the console to show it SUCCEEDED")
    page.wait_text("on demand")  # the per-pool costs, once attempts ended: the panel that once overflowed
    assert page.fits(), "the job's page scrolls sideways at 1400 px"
    page.shoot("06-job-succeeded.png")
    result = json.loads(deployment.runtime.session.client("s3").get_object(
        Bucket=deployment.runtime.cp.settings.bucket, Key=f"jobs/{job_id}/outputs/2/result.json")["Body"].read())
    assert result["primes"] == demo.sieve_count(limit)
    kinds = [e.kind for e in store.timeline(job_id, 1000)]
    assert kinds.index("JobSuspendRequested") < kinds.index("JobSuspended") < kinds.index("JobResumeRequested")


RING_STEPS, RING_SIZE, RING_SLEEP = 300, 64, 0.1


def test_a_gang_tasks_ranks_and_gang_checkpoints_show_in_a_real_browser(deployment: LocalDeployment,
                                                                         browser: Any) -> None:
    spec = {"name": "ring-console", "nodes": 2, "outputs": ["result.json"],
            "command": [sys.executable, ring.__file__, "--steps", str(RING_STEPS), "--size", str(RING_SIZE),
                        "--sleep", str(RING_SLEEP)],
            "checkpoint": {"method": "signal", "interval": 3600}}
    job_id = submit(deployment, spec)
    store = deployment.runtime.cp.store
    gang = wait_for(lambda: (t := store.get_task(job_id, 0)).state == "RUNNING" and t.progress and t, 180,
                    "the gang to run")
    page = Page(browser)
    browser.get(deployment.gateway.ui_url)
    page.click("ring-console")
    for shown in ("tasks 1, each a gang of 2", "0 gang of 2", "gang of task 0: 2 ranks",
                  "the instances of attempt 1, by rank",
                  f"0 {gang.gang_instances[0]}", f"1 {gang.gang_instances[1]}", "its gang of 2 launched",
                  "no gang checkpoint committed yet"):
        page.wait_text(shown)
    page.click("checkpoint", confirm=True)  # the gang's row: both ranks save, one manifest
    page.wait_text("checkpoint requested of task 0")
    page.wait_text("saved gang checkpoint 1 of all 2 ranks", 120)
    page.wait_text("#1 of 2 ranks")
    assert store.get_task(job_id, 0).checkpoint.ranks == 2
    assert page.fits(), "the gang's page scrolls sideways at 1400 px"
    page.shoot("07-gang-running.png")

    wait_for(lambda: store.get_job(job_id).state in (JobState.SUCCEEDED, JobState.FAILED), 300, "the gang to finish")
    wait_for(lambda: page.job_state() == "SUCCEEDED", 30, "the console to show the gang SUCCEEDED")
    page.wait_text(f"1 0: {gang.gang_instances[0]}, 1: {gang.gang_instances[1]}")  # attempt 1 ran on both
    page.wait_text("the instances attempt 1 ran on, by rank (succeeded)")
    assert page.fits(), "the gang's page scrolls sideways at 1400 px"
    page.shoot("08-gang-succeeded.png")
    result = json.loads(deployment.runtime.session.client("s3").get_object(
        Bucket=deployment.runtime.cp.settings.bucket, Key=f"jobs/{job_id}/outputs/0/result.json")["Body"].read())
    assert result == {"nodes": 2, "steps": RING_STEPS, "digest": ring.reference(2, RING_STEPS, RING_SIZE)}
