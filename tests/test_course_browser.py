"""The course in real JupyterLab, in a real headless Chromium (Debian chromium + Playwright).

For the welcome notebook and three others: open the notebook, run all cells from the Run menu,
check that no cell failed, that the widgets and the mermaid diagrams (in markdown cells and from
``Transcript.diagram()``) render, that the quiz answers a click at once, and that a command typed
into the console shows the server's reply. In 01-smtp the typed exercise is done key by key as the
notebook says, and the kernel's lab then holds the message with its headers and body apart; in
05-webmail the picture of one press of Send stays a readable height. Screenshots go to
test-artifacts/course/.

The notebooks run from a copy of course/, so nothing the browser saves touches the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

from browser import CHROMIUM_ARGS, expect, sync_playwright
from jupyterproc import running_jupyter
from conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "course"

# JupyterLab settings for the test: every cell rendered (no windowing), nothing fetched from the
# Internet.
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False},
}


# The notebook in the tab on show (hidden tabs stay in the page).
NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook"


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    require_tool("chromium")
    home = tmp_path_factory.mktemp("course-lab")
    shutil.copytree(ROOT / "course", home / "course")
    settings = home / "settings"
    for name, value in SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    src = str(ROOT / "src")
    env = {"PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "JUPYTERLAB_SETTINGS_DIR": str(settings),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime")}
    with running_jupyter("lab", home / "course", home / "jupyter.log", env=env) as server:
        yield {**server, "runtime": home / "runtime", "course": home / "course"}


@pytest.fixture(scope="module")
def browser(jupyterlab):
    chromium = require_tool("chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()


def sessions(jl) -> list[dict]:
    with urllib.request.urlopen(f"{jl['base']}/api/sessions?token={jl['token']}", timeout=5) as r:
        return json.load(r)


def wait_for_kernel(jl, notebook: str, timeout: float = 90) -> None:
    """Wait until the notebook's kernel exists and is idle (an idle status shown before the
    kernel exists would make Run All do nothing)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for s in sessions(jl):
            if s.get("path", "").endswith(notebook) and \
                    (s.get("kernel") or {}).get("execution_state") == "idle":
                return
        time.sleep(0.25)
    raise AssertionError(f"no idle kernel for {notebook}: {sessions(jl)}")


def shot(target, name: str, folder: Path = ARTIFACTS) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    target.screenshot(path=str(folder / f"{name}.png"))


def open_and_run_all(page, jl, name: str) -> float:
    """Open ``name`` (a path under the served folder, without .ipynb: "00-welcome",
    "el/00-welcome"), run all its cells and wait until every one has run; the seconds it took."""
    notebook = f"{name}.ipynb"
    # A workspace of its own: JupyterLab would otherwise reopen the notebooks of earlier tests.
    workspace = name.replace("/", "-")
    page.goto(f"{jl['base']}/lab/workspaces/{workspace}/tree/{notebook}?token={jl['token']}")
    expect(page.locator(f"{NOTEBOOK} .jp-Cell").first).to_be_visible(timeout=60_000)
    wait_for_kernel(jl, notebook)
    started = time.monotonic()
    for attempt in range(3):
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        try:  # the first cell starts ([*]) or is done ([1]) soon; if not, the click was lost
            page.wait_for_function(
                """() => /\\[(\\*|\\d+)\\]/.test(
                    document.querySelector('%s .jp-CodeCell .jp-InputPrompt').textContent)""" % NOTEBOOK,
                timeout=15_000)
            break
        except Exception:
            page.keyboard.press("Escape")
            wait_for_kernel(jl, notebook)
    # Done when every code cell shows an execution number (none is waiting with [*] or [ ]).
    try:
        page.wait_for_function(
            """() => {
            const prompts = [...document.querySelectorAll('%s .jp-CodeCell .jp-InputPrompt')]
                .map(e => e.textContent.trim());
            return prompts.length > 0 && prompts.every(t => /^\\[\\d+\\]:$/.test(t));
            }""" % NOTEBOOK, timeout=90_000)
    except Exception:
        shot(page, f"{name}-run-all-timeout")
        prompts = page.locator(f"{NOTEBOOK} .jp-CodeCell .jp-InputPrompt").all_inner_texts()
        raise AssertionError(f"{name}: Run All did not finish; prompts: {prompts}; "
                             f"sessions: {sessions(jl)}")
    elapsed = time.monotonic() - started
    errors = page.locator(f'{NOTEBOOK} .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
    assert not tracebacks, f"{name}: a cell failed: {tracebacks[0][:2000]}"
    return elapsed


def mermaid_rendered(page, at_least: int) -> None:
    diagrams = page.locator(".jp-RenderedMermaid img, .jp-RenderedMermaid svg")
    expect(diagrams.nth(at_least - 1)).to_be_attached(timeout=30_000)
    for i in range(diagrams.count()):
        box = diagrams.nth(i).bounding_box()
        assert box and box["width"] > 50 and box["height"] > 20, f"diagram {i} is empty"
    errors = page.locator(".jp-RenderedMermaid.jp-mod-warning, .jp-RenderedMermaid .error-icon")
    assert errors.count() == 0, "a mermaid diagram failed to parse"


def code_cell(page, contains: str):
    return page.locator(f"{NOTEBOOK} .jp-CodeCell",
                        has=page.locator(".jp-InputArea", has_text=contains)).first


def rerun(page, cell) -> None:
    """Run one cell again, as a learner does: click into it, Shift+Enter."""
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")


def type_into_console(page, cell, command: str, reply: str) -> None:
    box = cell.locator(".maillab-console input[type='text']")
    expect(box).to_be_visible(timeout=30_000)
    box.fill(command)
    box.press("Enter")
    screen = cell.locator(".maillab-console .ml-lines")
    expect(screen.locator("tr.ml-C").last).to_contain_text(command, timeout=15_000)
    expect(screen.locator("tr.ml-S").last).to_contain_text(reply, timeout=15_000)


def restart_lab(page, start: str = "maillab.start()", running: str = "Mail lab running") -> None:
    """After Run All the last cell has stopped the lab: run the cell that starts it again."""
    rerun(page, code_cell(page, start))
    expect(code_cell(page, start).locator(".jp-OutputArea-output")).to_contain_text(
        running, timeout=30_000)


def restart_lab_and_console(page, console_source: str):
    """After Run All the last cell has stopped the lab: start it again, and the console too."""
    restart_lab(page)
    cell = code_cell(page, console_source)
    rerun(page, cell)
    expect(cell.locator(".maillab-console")).to_contain_text("connected", timeout=30_000)
    return cell


def test_welcome_notebook_in_jupyterlab(browser, jupyterlab):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    seconds = open_and_run_all(page, jupyterlab, "00-welcome")
    shot(page, "00-welcome-after-run-all")
    mermaid_rendered(page, 2)  # the system picture, and the learner's own session drawn
    figure = page.locator("img[src*='mail-client.svg']")
    expect(figure).to_be_visible()
    assert figure.evaluate("img => img.naturalWidth") > 0, "the mail client figure did not load"
    for widget in (".maillab-console", ".maillab-transcript", ".maillab-quiz"):
        expect(page.locator(widget).first).to_be_visible()
    # The live transcript viewer saw the console's HELO, with the reply explained on hover.
    viewer = page.locator(".maillab-transcript").first
    expect(viewer).to_contain_text("HELO laptop.example.com")
    assert viewer.locator("summary[title]").count() > 0
    shot(viewer, "00-welcome-transcript-viewer")
    # The quiz answers a click at once.
    quiz = page.locator(".maillab-quiz").first
    quiz.locator(".widget-radio-box label", has_text="SMTP").first.click()
    expect(quiz).to_contain_text("Right!")
    shot(quiz, "00-welcome-quiz")
    cell = restart_lab_and_console(page, "console = Console(lab)")
    viewer_cell = code_cell(page, "TranscriptViewer(lab)")
    rerun(page, viewer_cell)  # a viewer of the new lab, following it live
    expect(viewer_cell.locator(".maillab-transcript")).to_contain_text("live", timeout=30_000)
    type_into_console(page, cell, "NOOP", "250")
    type_into_console(page, cell, "HELLO", "500")  # a mistake, answered with a hint
    shot(cell, "00-welcome-console")
    # The viewer's background poller pushed the new lines to the browser by itself.
    expect(viewer_cell.locator(".maillab-transcript")).to_contain_text("HELLO", timeout=10_000)
    shot(viewer_cell, "00-welcome-live-viewer")
    page.close()
    print(f"00-welcome: Run All took {seconds:.1f} s in JupyterLab")


def typed_exercise(course: Path) -> list[str]:
    """The lines 01-smtp asks the learner to type into the console, as the notebook shows them."""
    nb = json.loads((course / "01-smtp.ipynb").read_text())
    text = next("".join(c["source"]) for c in nb["cells"]
                if c["cell_type"] == "markdown" and "deliver a message by hand" in "".join(c["source"]))
    assert "press **Enter in the empty" in text, "the notebook explains how to send the empty line"
    return text.split("```\n")[1].rstrip("\n").split("\n")  # the block between the fences


def in_kernel(jl, notebook: str, code: str) -> str:
    """Run code in the notebook's own kernel (beside the browser) and return what it printed."""
    from jupyter_client import BlockingKernelClient
    kernel = next(s["kernel"]["id"] for s in sessions(jl) if s["path"].endswith(notebook))
    client = BlockingKernelClient(connection_file=str(jl["runtime"] / f"kernel-{kernel}.json"))
    client.load_connection_file()
    client.start_channels()
    printed = []
    try:
        reply = client.execute_interactive(code, timeout=30, output_hook=lambda msg: printed.append(
            msg["content"].get("text", "")) if msg["msg_type"] == "stream" else None)
    finally:
        client.stop_channels()
    assert reply["content"]["status"] == "ok", reply["content"]
    return "".join(printed)


def test_smtp_notebook_in_jupyterlab(browser, jupyterlab):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    open_and_run_all(page, jupyterlab, "01-smtp")
    shot(page, "01-smtp-after-run-all")
    mermaid_rendered(page, 2)  # the SMTP conversation, the relay
    relay = code_cell(page, "relay.diagram()")
    expect(relay.locator(".jp-RenderedMermaid")).to_be_visible()
    shot(relay, "01-smtp-relay-diagram")
    cells = page.locator(f"{NOTEBOOK} .jp-CodeCell")
    inputs = cells.locator(".jp-InputArea").all_inner_texts()
    stranger = next(i for i, text in enumerate(inputs)  # no AUTH, no DATA: relay refused
                    if "RCPT TO:<john@example.net>" in text and "AUTH" not in text
                    and "DATA" not in text)
    expect(cells.nth(stranger).locator(".jp-OutputArea")).to_contain_text("554")
    cell = restart_lab_and_console(page, "console = Console(lab)")
    # the typed exercise, key by key, exactly as the notebook says
    box = cell.locator(".maillab-console input[type='text']")
    sent = cell.locator(".maillab-console .ml-lines tr.ml-C")
    for line in typed_exercise(jupyterlab["course"]):
        before = sent.count()
        box.click()
        page.keyboard.type(line)
        page.keyboard.press("Enter")  # on an empty line too: that sends the empty line
        expect(sent).to_have_count(before + 1, timeout=15_000)
        expect(sent.last).to_have_text(f"client \u2192{line}" if line else "client \u2192",
                                       timeout=5_000)
    expect(cell.locator(".maillab-console .ml-lines tr.ml-S").last).to_contain_text(
        "221", timeout=15_000)
    shot(cell, "01-smtp-typed-exercise")
    stored = json.loads(in_kernel(jupyterlab, "01-smtp.ipynb", "import json; m = "
                                  "lab.mailbox('alice')[-1]; print(json.dumps(m.raw.decode()))"))
    head, separator, body = stored.partition("\r\n\r\n")
    assert separator, f"no empty line between headers and body: {stored!r}"
    assert "Subject: My first message by hand" in head and "Hello Alice" not in head
    assert body == "Hello Alice, I typed this myself!\r\n", body
    page.close()


def test_journey_notebook_in_jupyterlab(browser, jupyterlab):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    open_and_run_all(page, jupyterlab, "04-journey")
    mermaid_rendered(page, 2)
    journey = page.locator(".maillab-journey").first
    expect(journey).to_contain_text("Step 1 of 4")
    expect(journey.locator(".ml-box").first).to_be_visible()
    shot(journey, "04-journey-step-1")
    picture = code_cell(page, "hops = Journey(lab)").locator(".jp-RenderedMermaid img, "
                                                             ".jp-RenderedMermaid svg").first
    expect(picture).to_be_visible(timeout=30_000)
    print(f"04-journey: the picture of the journey is {picture.bounding_box()['height']:.0f} px tall")
    journey.locator("button", has_text="Next").click()
    expect(journey).to_contain_text("Step 2 of 4")
    expect(journey).to_contain_text("Received:")
    shot(journey, "04-journey-step-2")
    expect(page.locator(".maillab-mailbox").first).to_contain_text("new/")
    shot(page, "04-journey-after-run-all")
    page.close()


def test_webmail_picture_stays_readable(browser, jupyterlab):
    # issue 11: the "both halves" picture of 05-webmail was about 3,800 px tall
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    open_and_run_all(page, jupyterlab, "05-webmail")
    picture = code_cell(page, "Transcript(picture).diagram").locator(".jp-RenderedMermaid img, "
                                                                      ".jp-RenderedMermaid svg")
    expect(picture.first).to_be_visible(timeout=30_000)
    box = picture.first.bounding_box()
    shot(picture.first, "05-webmail-both-halves")
    print(f"05-webmail: the picture of one Send is {box['height']:.0f} px tall")
    assert box["height"] < 2000, f"{box['height']:.0f} px: fold more of the routine exchanges"
    page.close()
