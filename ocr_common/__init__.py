"""Shared pieces of both services: settings, database, models, job store, errors."""
