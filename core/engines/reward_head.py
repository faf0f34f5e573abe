"""A reward-head PRM built locally: a transformers backbone plus Qwen2.5-Math-PRM's score head.

Qwen2.5-Math-PRM ships its model class as remote code (`Qwen2ForProcessRewardModel`), which an
offline install cannot run (trust_remote_code fetches nothing here, and we never execute code
that came with weights). Its computation is small enough to rebuild: the backbone's last
hidden states -> Linear(h, h) -> ReLU -> Linear(h, 2), with the checkpoint's weights named
`model.*` (backbone) and `score.0.*`, `score.2.*` (head), as in its remote code and in vLLM's
`qwen2_rm.py`. Any backbone transformers knows by its config's model_type works.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.errors import StepScopeError


def _state_dict(directory: Path) -> dict:
    from safetensors.torch import load_file

    index = directory / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = [p.name for p in sorted(directory.glob("*.safetensors"))]
    if not files:
        raise StepScopeError(f"{directory} has no safetensors weights (a reward-head PRM is read from them)")
    state: dict = {}
    for name in files:
        state.update(load_file(str(directory / name)))
    return state


def load_reward_head_model(directory: str | Path, dtype):
    """The backbone and its score head with the checkpoint's weights, in eval mode."""
    from torch import nn
    from transformers import AutoConfig, AutoModel

    directory = Path(directory)
    config = AutoConfig.from_pretrained(directory)
    state = _state_dict(directory)
    head_out = state.get("score.2.weight")
    if head_out is None or "score.0.weight" not in state:
        raise StepScopeError(
            f"{directory} has no two-layer score head (score.0, score.2): not a reward-head PRM like Qwen2.5-Math-PRM"
        )

    class ProcessRewardHeadModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = config
            self.model = AutoModel.from_config(config)
            hidden = config.hidden_size
            self.score = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, head_out.shape[0]))

        def forward(self, input_ids, attention_mask=None):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return self.score(hidden)

    # Built on the CPU, not on the meta device: the rotary frequencies are buffers computed at
    # construction, not stored in the checkpoint. `assign` then frees the random init.
    model = ProcessRewardHeadModel()
    weights = {k: v for k, v in state.items() if not k.startswith("lm_head.")}
    unknown = [k for k in weights if not k.startswith(("model.", "score."))]
    if unknown:
        raise StepScopeError(f"{directory}: unexpected weights for a reward-head PRM ({', '.join(unknown[:3])})")
    try:
        model.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as error:
        raise StepScopeError(f"{directory}: its weights do not fit a reward-head PRM ({str(error).splitlines()[0]})") from None
    return model.to(dtype).eval()
