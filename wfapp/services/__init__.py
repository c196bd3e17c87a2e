"""The service layer: every change to wfapp's data goes through these functions.

Views, the JSON API, the CLI and RQ jobs call the same functions; each validates first and then
writes in one transaction, raising a ServiceError subclass that every caller maps to its medium.
"""
