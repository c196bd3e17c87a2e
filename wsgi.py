"""WSGI entry point: gunicorn 'wsgi:app'."""

from wfapp import create_app

app = create_app()
