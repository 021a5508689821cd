"""``keepsake-demo``: run the demo on http://127.0.0.1:5000 in development mode.

Development mode (Flask's debug mode) makes the session cookie work in every browser on
``http://localhost``, Safari included: ``KEEPSAKE_COOKIE_SECURE`` is ``"auto"`` there. For the
production setup, run it under a WSGI server instead: ``gunicorn 'keepsake_demo:create_app()'``.
"""

from __future__ import annotations

import argparse
import os


def main(argv: list[str] | None = None) -> None:
    """Start the demo's development server and print where it listens."""
    parser = argparse.ArgumentParser(
        prog="keepsake-demo", description="Run the Keepsake demo (development server)."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=5000, help="port to listen on")
    args = parser.parse_args(argv)

    # Before create_app: Keepsake reads debug mode once, at start-up. FLASK_DEBUG=0 in the
    # environment still wins.
    os.environ.setdefault("FLASK_DEBUG", "1")

    from . import create_app, keepsake
    from .accounts import DEMO_PASSWORD, DEMO_USERNAME

    app = create_app()
    with app.app_context():
        store = keepsake.store.describe()
    shown = "localhost" if args.host in ("127.0.0.1", "::1", "localhost") else args.host
    print(
        f"\n  Keepsake demo: http://{shown}:{args.port}/\n"
        f"  Sign in as {DEMO_USERNAME} / {DEMO_PASSWORD}\n"
        f"  Sessions: {store}\n"
        f"  Instance folder: {app.instance_path}\n"
        "  Press Ctrl+C to stop.\n",
        flush=True,
    )
    app.run(host=args.host, port=args.port, use_reloader=False)


if __name__ == "__main__":
    main()
