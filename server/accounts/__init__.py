"""Accounts: signed tokens and the access check (auth), sessions (sessions), passwords
(passwords), the per-process memory of checked users (usercache) and profiles (profile)."""
