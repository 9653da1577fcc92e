"""Hosted mode: one service for many callers, each with its own provider keys (see tenants.py, routes.py)."""
