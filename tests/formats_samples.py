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

RECORDS = {
    "gsm8k": GSM8K,
    "model-solutions": MODEL_SOLUTIONS,
    "prm800k": PRM800K,
    "processbench": PROCESSBENCH,
    "trl": TRL,
    "jsonl": JSONL,
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
