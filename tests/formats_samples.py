"""Small hand-written records in every import format (shapes as in the public releases)."""

from __future__ import annotations

import json
from pathlib import Path

GSM8K = [
    {
        "question": "A shop has 5 boxes of 12 pens and sells 17 pens. How many pens are left?",
        "answer": "The shop has 5 * 12 = <<5*12=60>>60 pens.\n"
                  "After selling, 60 - 17 = <<60-17=43>>43 pens are left.\n#### 43",
    },
    {
        "question": "Ivy buys 3 books at $1,200 each. How much does she pay?",
        "answer": "She pays 3 * 1,200 = $<<3*1200=3600>>3,600.\n#### 3,600",
    },
]

MODEL_SOLUTIONS = [
    {
        "question": "A shop has 5 boxes of 12 pens and sells 17 pens. How many pens are left?",
        "ground_truth": "The shop has 5 * 12 = <<5*12=60>>60 pens.\n"
                        "After selling, 60 - 17 = <<60-17=43>>43 pens are left.\nA: 43",
        "6b_finetuning": {"is_correct": False, "solution": "5 + 12 = <<5+12=17>>17 pens.\n17 - 17 = 0\nA: 0"},
        "175b_verification": {"is_correct": True, "solution": "5 * 12 = <<5*12=60>>60\n60 - 17 = <<60-17=43>>43\nA: 43"},
    },
]

PRM800K = [
    {
        "labeler": "labeler-a",
        "timestamp": "2023-01-22T04:34:27.052924",
        "generation": 9,
        "is_quality_control_question": False,
        "is_initial_screening_question": False,
        "question": {
            "problem": "What is $2 + 3 \\cdot 4$?",
            "ground_truth_solution": "$3 \\cdot 4 = 12$, so $2 + 12 = \\boxed{14}$.",
            "ground_truth_answer": "14",
            "pre_generated_steps": ["I multiply first.", "$3 \\cdot 4 = 12$.", "So $2 + 12 = 15$."],
            "pre_generated_answer": "15",
            "pre_generated_verifier_score": 0.2,
        },
        "label": {
            "steps": [
                {"completions": [{"text": "I multiply first.", "rating": 0, "flagged": None}],
                 "human_completion": None, "chosen_completion": 0},
                {"completions": [{"text": "$3 \\cdot 4 = 12$.", "rating": 1, "flagged": False}],
                 "human_completion": None, "chosen_completion": 0},
                {"completions": [
                    {"text": "So $2 + 12 = 15$.", "rating": -1, "flagged": False},
                    {"text": "So $2 + 12 = 14$.", "rating": 1, "flagged": False},
                 ], "human_completion": None, "chosen_completion": None},
            ],
            "total_time": 1234,
            "finish_reason": "found_error",
        },
    },
    {
        "labeler": "labeler-b",
        "timestamp": "2022-09-01T10:00:00",
        "generation": None,
        "question": {"problem": "What is $10 - 4$?", "ground_truth_answer": "6"},
        "label": {
            "steps": [
                {"completions": [{"text": "$10 - 4 = 5$.", "rating": -1, "flagged": False}],
                 "human_completion": {"text": "$10 - 4 = 6$.", "rating": None, "source": "human",
                                      "flagged": False, "corrected_rating": None},
                 "chosen_completion": None},
                {"completions": [{"text": "# Answer\n\n6", "rating": 1, "flagged": True}],
                 "human_completion": None, "chosen_completion": 0},
            ],
            "total_time": 99,
            "finish_reason": "solution",
        },
    },
]

PROCESSBENCH = [
    {"id": "gsm8k-0", "generator": "Qwen2-7B-Instruct", "problem": "Tom has 3 apples and buys 4 more. How many?",
     "steps": ["Tom starts with 3 apples.", "He buys 4, so 3 + 4 = 8.", "The answer is 8."],
     "final_answer_correct": False, "label": 1},
    {"id": "gsm8k-1", "generator": "Llama-3.1-8B", "problem": "What is 6 times 7?",
     "steps": ["6 * 7 = 42.", "The answer is 42."], "final_answer_correct": True, "label": -1},
]

TRL = [
    {"prompt": "What is 9 - 2?", "completions": ["9 - 2 = 7.", "The answer is 7."], "labels": [True, True]},
    {"prompt": "What is 5 * 5?", "completions": ["5 * 5 = 10.", "Then 10 + 0 = 10.", "The answer is 10."],
     "labels": [False, False, False]},
]

JSONL = [
    {"question": "What is 1 + 1?", "gold": "2", "steps": ["1 + 1 = 2.", "The answer is 2."]},
    {"question": "What is 2 + 2?", "gold": "4", "solution": "2 + 2 = 4.\nThe answer is 4.", "rule": "line",
     "model": "hand", "correct": True},
    {"question": "What is 3 + 3?", "gold": "6"},
]

# Reasoning traces, one of each shape, with the real field names: an OpenR1-Math-220k record
# (two generations, the second cut off mid-thought), a chat record whose assistant message
# has reasoning_content (DeepSeek's API, vLLM's reasoning parser), one with <think> in its
# content, and a plain-text trace.
REASONING = [
    {
        "problem": "Mia buys 4 pens at $3 each and a $5 notebook. How many dollars does she spend?",
        "solution": "4 * 3 + 5 = 17.", "answer": "17", "problem_type": "Algebra", "question_type": "math-word-problem",
        "source": "hand", "uuid": "0b3a5e6c-0000-4000-8000-000000000001",
        "is_reasoning_complete": [True, False],
        "generations": [
            "<think>\nOkay, Mia buys 4 pens at 3 dollars each.\n\nThe pens cost 4 * 3 = 12 dollars. Adding the "
            "notebook, 12 + 5 = 18.\n\nWait, 12 + 5 is 17, not 18. So the total is 17.\n</think>\n\n"
            "Mia spends $4 \\times 3 + 5 = 17$ dollars.\n\n\\boxed{17}",
            "<think>\nThe pens cost 4 * 3 = 12 dollars.\n\nThen the notebook",
        ],
        "correctness_math_verify": [True, False],
        "correctness_llama": None,
        "finish_reasons": ["stop", "length"],
        "correctness_count": 1,
        "messages": [{"role": "user", "content": "Mia buys 4 pens..."}, {"role": "assistant", "content": "<think>..."}],
    },
    {
        "messages": [
            {"role": "system", "content": "Reason step by step."},
            {"role": "user", "content": "What is 6 * 7?"},
            {"role": "assistant", "reasoning_content": "6 * 7 is 42.\n\nLet me check: 7 * 6 = 42. Yes.",
             "content": "The answer is 42."},
        ],
        "answer": "42", "model": "deepseek-reasoner",
    },
    {
        "messages": [
            {"role": "user", "content": "What is 9 + 10?"},
            {"role": "assistant", "content": "<think>9 + 10 = 21.\n\nHmm, no: 9 + 10 = 19.</think>\n\n**19**"},
        ],
        "answer": "19",
    },
    {"problem": "What is 2 ** 5?", "answer": "32", "text": "2 ** 5 = 2 * 2 * 2 * 2 * 2.\n\nThat is 32.\n\nThe answer is 32."},
]

RECORDS = {
    "gsm8k": GSM8K,
    "model-solutions": MODEL_SOLUTIONS,
    "prm800k": PRM800K,
    "processbench": PROCESSBENCH,
    "trl": TRL,
    "jsonl": JSONL,
    "reasoning": REASONING,
}


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_pretty(path: Path, records: list) -> Path:
    """Concatenated pretty-printed objects, as some PRM800K copies are."""
    path.write_text("".join(json.dumps(r, indent=2) + "\n" for r in records), encoding="utf-8")
    return path


def write_array(path: Path, records: list) -> Path:
    path.write_text(json.dumps(records, indent=2), encoding="utf-8")
    return path
