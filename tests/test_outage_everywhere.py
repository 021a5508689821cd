"""A store failure wherever the session is first read (view, template, error page, hook): 503."""

from __future__ import annotations

import pytest
from flask import Flask, render_template_string, session

from flask_keepsake.testing import login_client

from .conftest import AppFactory, spy

#: A store error anywhere in a request is a 503, on every store (issue 13).
pytestmark = pytest.mark.every_store

PAGE = "<p>{{ 'in' if session.get('user') else 'out' }}</p>"


def _app(make_app: AppFactory) -> Flask:
    app = make_app()
    # As in production: exceptions become error responses instead of propagating to the test.
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.errorhandler(404)
    def not_found(exc: Exception) -> tuple[str, int]:
        return render_template_string("missing " + PAGE), 404

    @app.errorhandler(405)
    def not_allowed(exc: Exception) -> tuple[str, int]:
        return render_template_string("method " + PAGE), 405

    @app.errorhandler(500)
    def broken(exc: Exception) -> tuple[str, int]:
        return render_template_string("broken " + PAGE), 500

    @app.get("/template")
    def template() -> str:
        return render_template_string(PAGE)

    @app.get("/processor")
    def processor() -> str:
        return render_template_string("{{ who }}")

    @app.context_processor
    def who() -> dict[str, object]:
        return {"who": session.get("user", "nobody")}

    @app.get("/hooked")
    def hooked() -> str:
        return "plain"

    @app.after_request
    def read_in_hook(response):  # type: ignore[no-untyped-def]
        from flask import request

        if request.path == "/hooked":
            session.get("user")
        return response

    @app.get("/fails")
    def fails() -> str:
        raise RuntimeError("a bug in the view")

    return app


def _down(app: Flask) -> object:
    client = app.test_client()
    login_client(client, 3, data={"user": "ada"})
    spy(app).down = True
    return client


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/template"),
        ("GET", "/processor"),
        ("GET", "/no-such-page"),
        ("POST", "/template"),
        ("GET", "/hooked"),
        ("GET", "/fails"),
    ],
)
def test_store_down_is_503_wherever_the_session_is_read(
    make_app: AppFactory, method: str, path: str
) -> None:
    """View templates, context processors, 404/405/500 pages and after-request hooks: a 503."""
    app = _app(make_app)
    client = _down(app)
    response = client.open(path, method=method)  # type: ignore[attr-defined]
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "Set-Cookie" not in response.headers


def test_service_resumes_by_itself(make_app: AppFactory) -> None:
    """When the store answers again, the same pages are served normally."""
    app = _app(make_app)
    client = _down(app)
    assert client.get("/no-such-page").status_code == 503  # type: ignore[attr-defined]
    spy(app).down = False
    response = client.get("/no-such-page")  # type: ignore[attr-defined]
    assert (response.status_code, response.text) == (404, "missing <p>in</p>")


def test_error_page_without_session_cookie_needs_no_store(make_app: AppFactory) -> None:
    """A visitor without a cookie gets the real 404 page even while the store is down."""
    app = _app(make_app)
    spy(app).down = True
    response = app.test_client().get("/no-such-page")
    assert (response.status_code, response.text) == (404, "missing <p>out</p>")


def test_flask_login_error_page_is_503(make_app: AppFactory) -> None:
    """The demo's case: a 404 page that shows current_user, with Flask-Login, store down."""
    flask_login = pytest.importorskip("flask_login")
    app = make_app()
    app.config["PROPAGATE_EXCEPTIONS"] = False
    manager = flask_login.LoginManager(app)
    manager.user_loader(lambda user_id: None)

    @app.errorhandler(404)
    def not_found(exc: Exception) -> tuple[str, int]:
        text = "{{ 'in' if current_user.is_authenticated else 'out' }}"
        return render_template_string(text), 404

    client = app.test_client()
    login_client(client, 3)
    spy(app).down = True
    response = client.get("/nowhere")
    assert (response.status_code, response.headers["Retry-After"]) == (503, "5")
