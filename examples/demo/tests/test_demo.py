"""Tests of the demo application."""

from __future__ import annotations

from pathlib import Path

from keepsake_demo import create_app


def test_visit_counter_counts(tmp_path: Path) -> None:
    """The home page counts visits in the server-side session."""
    app = create_app({"TESTING": True, "KEEPSAKE_STORE": f"sqlite:///{tmp_path / 's.sqlite3'}"})
    client = app.test_client()
    assert b"Visits in this session: 1" in client.get("/").data
    assert b"Visits in this session: 2" in client.get("/").data
