"""The original command-line client of the OCR API.

    python test/client_test.py image-sync --image-path page.png
    python test/client_test.py post-image --image-path page.png
    python test/client_test.py get-image --id TASK_ID [--wait]
    python test/client_test.py image --image-path page.png [--wait]

Each command prints the server's JSON answer as it came. An HTTP error prints the server's
message and exits with status 1. The HTTP calls are the ``ocr_client`` library's.
"""

from __future__ import annotations

import argparse
import base64
import sys

from ocr_client import DEFAULT_URL, ClientError, OcrClient

REQUEST_TIMEOUT_S = 180
POLL_INTERVAL_S = 0.5


def read_image(path: str) -> str:
    with open(path, "rb") as image_file:
        return base64.b64encode(image_file.read()).decode("ascii")


def client(url: str) -> OcrClient:
    # No retries: the original client reports the first error as it came.
    return OcrClient(url, timeout_s=REQUEST_TIMEOUT_S)


def image_sync(url: str, image_path: str) -> dict:
    return client(url).image_sync(read_image(image_path))


def post_image(url: str, image_path: str) -> dict:
    return client(url).post_image(read_image(image_path))


def get_image(url: str, task_id: str, wait: bool = False, timeout_s: float = 60.0) -> dict:
    if not wait:
        return client(url).get_image(task_id)
    return client(url).wait_image(task_id, timeout_s, POLL_INTERVAL_S)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Client of the OCR API")
    parser.add_argument(
        "command", choices=["image-sync", "post-image", "get-image", "image"], help="what to do"
    )
    parser.add_argument("--image-path", help="the image to read (image-sync, post-image, image)")
    parser.add_argument("--id", dest="task_id", help="the task id (get-image)")
    parser.add_argument(
        "--url", default=DEFAULT_URL, help=f"the API server (default {DEFAULT_URL})"
    )
    parser.add_argument(
        "--wait", action="store_true", help="get-image, image: poll until the text is ready"
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="how long --wait polls, in seconds"
    )
    args = parser.parse_args(argv)
    if args.command in ("image-sync", "post-image", "image") and not args.image_path:
        parser.error(f"{args.command} needs --image-path")
    if args.command == "get-image" and not args.task_id:
        parser.error("get-image needs --id")
    args.url = args.url.rstrip("/")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "image-sync":
            print(image_sync(args.url, args.image_path))
        elif args.command == "post-image":
            print(post_image(args.url, args.image_path))
        elif args.command == "get-image":
            print(get_image(args.url, args.task_id, args.wait, args.timeout))
        else:
            posted = post_image(args.url, args.image_path)
            print(posted)
            print(get_image(args.url, posted["task_id"], args.wait, args.timeout))
    except (ClientError, OSError, ValueError) as exc:  # ValueError: a --url without http://
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
