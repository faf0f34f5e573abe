"""A tiny randomly initialised Llama built from a config, with its own small tokenizer.

Real architecture, real tokenizer, real weights file on disk: every engine (transformers,
vLLM in-process, `vllm serve`) loads it like any model directory, in seconds, with no hub.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "Question: Tom has 3 apples and buys 5 more. How many apples does he have?",
    "Answer: Tom has 3 + 5 = 8 apples. The answer is 8.",
    "Step 1: 12 * 4 = 48. Step 2: 48 - 6 = 42. #### 42",
    "Is this step correct? Yes No yes no",
    "The quick brown fox jumps over the lazy dog 0123456789 + - * / = ( ) $ % .",
]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_model(directory: Path, seed: int = 0) -> Path:
    """Write a tiny Llama (2 layers, hidden 128, head dim 64) and its tokenizer to `directory`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory = Path(directory)
    if (directory / "config.json").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # Untied: with tied embeddings and unit-scale embeddings, logits are dominated by each
        # token's self-similarity (~hidden size), so the model repeats its last token with
        # probability 1 - 1e-40 and sampling, stop strings and top-k log-probabilities all
        # degenerate.
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # Random init gives near-uniform next-token distributions; a larger scale makes sampling
    # and log-probabilities vary enough across tokens for the contract tests to be sharp.
    # An output head of std 0.25 gives logits of std ~3 over 392 tokens: the top token has
    # probability ~0.2-0.3, the 20th ~0.01, so samples differ and the top 20 are distinct.
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_(0.0, 1.0)
        model.lm_head.weight.normal_(0.0, 0.25)
    model.to(torch.bfloat16).save_pretrained(directory)
    return directory
