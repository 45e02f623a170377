""".github/workflows/publish.yml, checked offline: valid against the GitHub workflow schema
(check-jsonschema carries it), run on version tags only, and building every Dockerfile of the
repository, each into its own image on the GitHub Container Registry."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "publish.yml"
IMAGES = {
    "ocr-service-api": "docker/Dockerfile.api",
    "ocr-service-ocr": "docker/Dockerfile.ocr",
    "ocr-service": "Dockerfile",
}


def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert binary, "check-jsonschema is not installed: make install-dev"
    return subprocess.run(
        [binary, "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def workflow() -> dict[Any, Any]:
    return dict(yaml.safe_load(WORKFLOW.read_text()))


def test_the_workflow_is_valid_for_github_actions() -> None:
    result = check_jsonschema(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_finds_a_broken_workflow(tmp_path: Path) -> None:
    # The check can fail: a step with a key GitHub does not know is refused.
    broken = tmp_path / "publish.yml"
    text = WORKFLOW.read_text().replace("      - uses: actions/checkout@v4", "      - usse: x", 1)
    assert text != WORKFLOW.read_text()
    broken.write_text(text)
    assert check_jsonschema(broken).returncode != 0


def test_it_runs_on_version_tags_only() -> None:
    # PyYAML reads the key "on" as True (YAML 1.1).
    assert workflow()[True] == {"push": {"tags": ["v*"]}}
    assert workflow()["permissions"] == {"contents": "read", "packages": "write"}


def test_it_builds_every_dockerfile_of_the_repository_into_its_image() -> None:
    [job] = workflow()["jobs"].values()
    built = {row["image"]: row["dockerfile"] for row in job["strategy"]["matrix"]["include"]}
    assert built == IMAGES
    present = {p.relative_to(ROOT).as_posix() for p in ROOT.glob("**/Dockerfile*")}
    present = {p for p in present if not p.startswith((".venv/", "test/"))}
    assert set(built.values()) == present
    steps = {step.get("uses", "").partition("@")[0]: step for step in job["steps"]}
    build = steps["docker/build-push-action"]["with"]
    assert build["context"] == "." and build["file"] == "${{ matrix.dockerfile }}"
    assert build["push"] is True and build["tags"] == "${{ steps.meta.outputs.tags }}"
    assert steps["docker/login-action"]["with"]["registry"] == "ghcr.io"
    meta = steps["docker/metadata-action"]["with"]
    assert meta["images"] == "ghcr.io/${{ github.repository_owner }}/${{ matrix.image }}"
    assert "type=semver,pattern={{version}}" in meta["tags"]


@pytest.mark.parametrize("dockerfile", sorted(IMAGES.values()))
def test_each_dockerfile_copies_only_what_the_build_context_has(dockerfile: str) -> None:
    # .dockerignore keeps test/, bench/ and most of docker/ out of the context: a COPY of them
    # would fail only in the build.
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    excluded = {line for line in ignored if not line.startswith("!")}
    allowed = {line[1:] for line in ignored if line.startswith("!")}
    for line in (ROOT / dockerfile).read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), (dockerfile, source)
                top = source.split("/")[0]
                assert source in allowed or top not in excluded, (dockerfile, source)
