"""What every answer of the API carries beyond its body, and the answer to OPTIONS."""

from __future__ import annotations

from flask import Flask, Response, jsonify

# Browsers must take every answer as the type it says (JSON stays JSON, never sniffed as HTML).
NOSNIFF = ("X-Content-Type-Options", "nosniff")


def install_response_headers(app: Flask) -> None:
    @app.after_request
    def nosniff(response: Response) -> Response:
        response.headers.setdefault(*NOSNIFF)
        return response


def options_response(default: Response) -> Response:
    """OPTIONS on a path: its methods, in the Allow header (the same list a 405 gives) and as
    JSON, like every other answer."""
    methods = sorted(default.allow)
    response = jsonify({"allow": methods})
    response.headers["Allow"] = ", ".join(methods)
    return response
