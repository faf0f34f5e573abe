"""What the UI and CLI say about a model before loading it: where it is, whether it is here.

Nothing here downloads or loads weights; that happens lazily, in the job that needs them.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import StepScopeError
from core.models import load_presets, locate_wheel_gguf, resolve_model


@dataclass(frozen=True)
class ModelStatus:
    name: str
    summary: str = ""
    error: str = ""


def describe_model(name: str) -> ModelStatus:
    if not name:
        return ModelStatus(name, error="no model chosen")
    try:
        resolved = resolve_model(name, fetch=False)
    except StepScopeError as error:
        return ModelStatus(name, error=str(error))
    where = resolved.directory + (f"/{resolved.gguf_file}" if resolved.gguf_file else "")
    described = resolved.preset.description if resolved.preset else "custom model"
    return ModelStatus(name, summary=f"{described} — {where} ({resolved.fingerprint})")


def preset_availability(preset) -> str:
    if preset.source != "wheel":
        return f"hub: {preset.settings.get('repo', '')} (downloaded by the engine on first use)"
    try:
        return str(locate_wheel_gguf(preset, fetch=False))
    except StepScopeError:
        return "not fetched yet (fetched on first use)"


def preset_table() -> list[dict]:
    return [
        {
            "name": preset.name,
            "source": preset.source,
            "prompt style": preset.prompt_style,
            "available": preset_availability(preset),
            "description": preset.description,
        }
        for preset in load_presets().values()
    ]
