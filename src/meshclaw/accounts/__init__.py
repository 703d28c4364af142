"""Orgs, teams, users and API tokens."""
