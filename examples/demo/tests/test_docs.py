"""docs/demo.md: every screenshot it shows is one the browser tests write."""

from __future__ import annotations

import re
from pathlib import Path

from demo_servers import IMAGES

DEMO_DOC = IMAGES.parent / "demo.md"
E2E = Path(__file__).with_name("test_e2e.py")


def test_every_screenshot_in_the_docs_is_made_by_the_tests() -> None:
    """Each images/<name>.png in docs/demo.md is written by a screenshot(page, "<name>") call."""
    shown = set(re.findall(r"\]\(images/([a-z0-9-]+)\.png\)", DEMO_DOC.read_text()))
    made = set(re.findall(r'screenshot\(\w+, "([a-z0-9-]+)"\)', E2E.read_text()))
    assert shown
    assert shown - made == set()
    assert made - shown == set()


def test_every_screenshot_exists() -> None:
    """The images the page shows are in docs/images/."""
    for name in re.findall(r"\]\(images/([a-z0-9-]+\.png)\)", DEMO_DOC.read_text()):
        assert (IMAGES / name).is_file(), name
