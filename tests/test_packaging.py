"""`pip install .` (not editable) in a fresh venv gives a working app, templates and plugins."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for path in (ROOT / "wfapp").rglob("__init__.py")
    }
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert config["package-dir"]["wfapp.builtin_plugins"] == "plugins"


@pytest.mark.slow
def test_pip_install_gives_a_working_app(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    installed = subprocess.run([*pip, str(ROOT)], check=True, cwd=tmp_path, capture_output=True,
                               text=True)
    # A new user's `make run` is not greeted by setuptools warnings about the package layout.
    assert "Package would be ignored" not in installed.stderr, installed.stderr[-2000:]
    assert "BuildBackendWarning" not in installed.stderr, installed.stderr[-2000:]
    work = tmp_path / "site"
    work.mkdir()
    env = {
        **os.environ,
        "WFAPP_SECRET_KEY": "packaging-test",
        "WFAPP_SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'pkg.sqlite'}",
        "PYTHONPATH": "",
    }
    flask = [str(venv / "bin" / "flask"), "--app", "wfapp"]
    subprocess.run([*flask, "db", "upgrade"], check=True, cwd=work, env=env)
    demo = subprocess.run([*flask, "demo"], check=True, cwd=work, env=env, capture_output=True,
                          text=True)
    password = re.search(r"Log in as admin / (\S+)", demo.stdout).group(1)
    script = f"""
import wfapp
from wfapp import create_app
assert "site-packages" in wfapp.__file__, wfapp.__file__
app = create_app()
client = app.test_client()
app.config["WTF_CSRF_ENABLED"] = False
login = {{"username": "admin", "password": {password!r}}}
assert client.post("/auth/login", data=login).status_code == 302
page = client.get("/workflows/").get_data(as_text=True)
assert "ORDER_SYNC" in page, page
assert client.get("/static/wfapp.js").status_code == 200
assert client.get("/bootstrap/static/css/bootstrap.min.css").status_code == 200
print(sorted(app.extensions["wfapp"]["registry"].trigger_types))
"""
    out = subprocess.run([str(venv / "bin" / "python"), "-c", script], cwd=work, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "on_bc_event" in out.stdout
