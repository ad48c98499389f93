"""A learner types a %%smtp cell in real JupyterLab (headless Chromium), key by key, runs it with
Shift+Enter, and reads the conversation below the cell; the message is then in the lab's mailbox
with its headers and body apart. Screenshots go to test-artifacts/magics/."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

from browser import CHROMIUM_ARGS, expect, sync_playwright
from conftest import require_tool
from jupyterproc import running_jupyter
from test_course_browser import NOTEBOOK, SETTINGS, wait_for_kernel

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "magics"

TYPED = """%%smtp example.com
EHLO laptop.example.com
MAIL FROM:<bob@example.com>
RCPT TO:<alice@example.com>
DATA
Subject: Typed in JupyterLab

Hello Alice!
.
QUIT"""


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    require_tool("chromium")
    home = tmp_path_factory.mktemp("magics-lab")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import maillab\nlab = maillab.start(ports='any')")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}  # else JupyterLab asks which kernel
    nbformat.write(notebook, home / "sessions.ipynb")
    settings = home / "settings"
    for name, value in SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    env = {"PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "JUPYTERLAB_SETTINGS_DIR": str(settings),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime")}
    with running_jupyter("lab", home, home / "jupyter.log", env=env) as server:
        yield server


def run_typed(page, text: str, index: int):
    """Type ``text`` into the empty cell at ``index`` (made by the last Shift+Enter), run it."""
    cell = page.locator(f"{NOTEBOOK} .jp-CodeCell").nth(index)
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.type(text)
    page.keyboard.press("Shift+Enter")
    expect(cell.locator(".jp-InputPrompt")).to_have_text("[%d]:" % (index + 1), timeout=30_000)
    return cell.locator(".jp-OutputArea")


def test_typing_a_smtp_cell_in_jupyterlab(jupyterlab):
    chromium = require_tool("chromium")
    jl = jupyterlab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            page.goto(f"{jl['base']}/lab/workspaces/magics/tree/sessions.ipynb?token={jl['token']}")
            expect(page.locator(f"{NOTEBOOK} .jp-Cell").first).to_be_visible(timeout=60_000)
            wait_for_kernel(jl, "sessions.ipynb")
            page.locator(f"{NOTEBOOK} .jp-CodeCell .jp-InputArea-editor").first.click()
            page.keyboard.press("Shift+Enter")  # start the lab; a new empty cell appears below
            expect(page.locator(f"{NOTEBOOK} .jp-CodeCell .jp-InputPrompt").first).to_have_text(
                "[1]:", timeout=60_000)
            output = run_typed(page, TYPED, 1)
            session = output.locator(".maillab-session")
            expect(session).to_contain_text("221 Bye", timeout=30_000)
            text = session.inner_text()
            for seen in ("EHLO laptop.example.com", "250-mail.example.com", "354 ",
                         "Subject: Typed in JupyterLab", "Hello Alice!", "Go ahead: send the message"):
                assert seen in text, f"{seen!r} is not in the output:\n{text}"
            client_row = session.locator("div", has_text="MAIL FROM:<bob@example.com>").last
            server_row = session.locator("div", has_text="221 Bye").last
            assert client_row.evaluate("e => getComputedStyle(e).backgroundColor") != \
                server_row.evaluate("e => getComputedStyle(e).backgroundColor")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "smtp-cell.png"), full_page=True)
            stored = run_typed(page, "m = lab.mailbox('alice')[0].message\n"
                                     "print(m['Subject'], '|', m.get_content().strip())", 2)
            expect(stored).to_contain_text("Typed in JupyterLab | Hello Alice!", timeout=30_000)
        finally:
            browser.close()
