"""Tiny randomly initialised PRMs of the three families, built from configs, each with its tokens.

- tag: a Llama causal LM whose tokenizer knows " ки", "+" and "-" (Math-Shepherd's and
  RLHFlow's tokens);
- token-classification: LlamaForTokenClassification with two labels (what TRL's PRM trainer
  saves);
- reward-head: a Qwen2 backbone with Qwen2.5-Math-PRM's head (Linear, ReLU, Linear to 2), saved
  under its weight names with architectures ["Qwen2ForProcessRewardModel"], and "<extra_0>"
  as a special token. vLLM knows this architecture; transformers needs StepScope's own class.

Heads get a larger weight scale than the default init so that step scores spread over (0, 1)
instead of sitting at 0.5, which would make an "equal to 1e-5" check blunt.
"""

from __future__ import annotations

from pathlib import Path

from tiny_model import CHAT_TEMPLATE

CORPUS = [
    "Question: Tom has 3 apples and buys 5 more. How many apples does he have?",
    "Step 1: Tom has 3 + 5 = 8 apples. ки\nStep 2: The answer is 8. ки",
    "Step 1: 12 * 4 = 48. ки\nStep 2: 48 - 6 = 42. ки\nStep 3: #### 42 ки",
    "+ - + - ки ки The quick brown fox jumps over the lazy dog 0123456789 * / = ( ) $ % .",
]
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tokenizer(directory: Path, extra_special: tuple[str, ...] = ("<extra_0>",)):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420, special_tokens=SPECIAL + list(extra_special),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tok.train_from_iterator(CORPUS * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        additional_special_tokens=list(extra_special),
    )  # fmt: skip
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)
    return tokenizer


def _llama_config(tokenizer, **extra):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False, **extra,
    )  # fmt: skip


def build_tag_prm(directory: Path, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaForCausalLM

    directory = Path(directory)
    if (directory / "config.json").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(directory, ())
    torch.manual_seed(seed)
    model = LlamaForCausalLM(_llama_config(tokenizer))
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 0.5)
    model.save_pretrained(directory)
    return directory


def build_token_classification_prm(directory: Path, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaForTokenClassification

    directory = Path(directory)
    if (directory / "config.json").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(directory, ())
    torch.manual_seed(seed)
    model = LlamaForTokenClassification(_llama_config(tokenizer, num_labels=2))
    with torch.no_grad():
        model.score.weight.normal_(0.0, 0.5)
    model.save_pretrained(directory)
    return directory


def build_reward_head_prm(directory: Path, seed: int = 0, special: tuple[str, ...] = ("<extra_0>",)) -> Path:
    import torch
    from safetensors.torch import save_file
    from torch import nn
    from transformers import Qwen2Config, Qwen2Model

    directory = Path(directory)
    if (directory / "config.json").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(directory, special)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
        architectures=["Qwen2ForProcessRewardModel"], num_labels=2,
    )  # fmt: skip
    torch.manual_seed(seed)
    backbone = Qwen2Model(config)
    head = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    with torch.no_grad():
        head[0].weight.normal_(0.0, 0.3)
        head[2].weight.normal_(0.0, 0.3)
    state = {f"model.{k}": v for k, v in backbone.state_dict().items()}
    state.update({f"score.{k}": v for k, v in head.state_dict().items()})
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in state.items()}, str(directory / "model.safetensors"))
    config.dtype = "bfloat16"
    config.save_pretrained(directory)
    return directory
