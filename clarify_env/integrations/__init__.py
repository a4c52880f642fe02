"""Adapters that let other frameworks load this environment (verifiers)."""
