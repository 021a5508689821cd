"""``keepsake-demo``: run the demo on http://127.0.0.1:5000 in development mode."""

from __future__ import annotations

import os


def main() -> None:
    """Start the demo's development server and print where it listens."""
    from . import create_app

    os.environ.setdefault("FLASK_DEBUG", "1")
    app = create_app()
    host = os.environ.get("KEEPSAKE_DEMO_HOST", "127.0.0.1")
    port = int(os.environ.get("KEEPSAKE_DEMO_PORT", "5000"))
    print(f"Keepsake demo: http://localhost:{port}/  (store: {app.extensions['keepsake'].store.describe()})")
    app.run(host=host, port=port, debug=True, use_reloader=False)


if __name__ == "__main__":
    main()
