"""Renderings of a job's result, one module a format."""
