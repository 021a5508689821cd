"""The extensions the demo uses, created once and set up on each app by ``create_app``."""

from __future__ import annotations

from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect

from flask_keepsake import Keepsake

keepsake = Keepsake()
csrf = CSRFProtect()
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Sign in to see that page."
