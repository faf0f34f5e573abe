"""One scorer interface over every verifier: the score of the newest step of each prefix.

`score(problem, prefixes)` takes the candidates of one depth together (one batch) and returns
one float per prefix, higher = more likely on the way to the right answer. A prefix is the
list of step texts from the first step to the candidate's, as the store keeps them (stripped).

`kind` is one of core.store.verifier_identity.VERIFIER_KINDS, so a search's scores are stored
under a verifier whose kind is data; `fingerprint` is what a manifest records to tell two
scorers apart; `cost` is what the scorer spent (core.search.compute reads it after each call).

- `RandomScorer`: uniform scores, the floor every guided search must beat.
- `MCScorer`: the Monte Carlo value (Math-Shepherd's soft label): the fraction of k rollouts
  from the prefix that reach the gold answer. It reads the gold answer, so it is the labelling
  setting (OmegaPRM, rStar-Math's training searches), an upper reference, not a deployable
  test-time verifier.
- `JudgeScorer`: a judge's P(Yes) that the newest step is correct (core.verdicts' step
  template; log-prob or generative mode).
- `PRMScorer`: a process reward model's score of the newest step (core.prm; any family).
- `ProbeScorer`: a probe verifier (core.probes) read at the end of the newest step, from the
  hidden states of the base model it was trained on.

- `ORMScorer`: a fine-tuned ORM's P(correct) of the solution so far (core.orm_training). It was
  trained on finished solutions; on a partial one it is a value estimate outside what it was
  trained on, which is how an outcome verifier guides a step-level search.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Protocol, Sequence, runtime_checkable

from core.engines.base import Engine, SamplingParams
from core.grading import GRADER_NAME
from core.mcpe import Counts, step_value
from core.policy import POLICY_STOP
from core.search.answers import Grader
from core.search.compute import VerifierCost, count_prompt_tokens, parameter_count
from core.search.config import SearchProblem
from core.search.journal import digest
from core.search.prompts import continuation_prompt, has_final_answer
from core.search.records import SearchRollout


@runtime_checkable
class Scorer(Protocol):
    name: str
    kind: str  # judge | prm | probe | orm | mc | random
    cost: VerifierCost

    @property
    def fingerprint(self) -> dict:
        """Everything that identifies this scorer, for the job manifest."""

    def score(self, problem: SearchProblem, prefixes: Sequence[Sequence[str]]) -> list[float]:
        """For each prefix (step texts, first to newest), the score of its newest step."""


class RandomScorer:
    """A uniform score in [0, 1) drawn from (seed, problem, prefix): independent of whether the
    step is right, and a function of its input, so a resumed search sees the same scores."""

    kind = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.name = f"random:{seed}"
        self.cost = VerifierCost(parameters=0)

    @property
    def fingerprint(self) -> dict:
        return {"kind": self.kind, "name": self.name, "seed": self.seed}

    def score(self, problem: SearchProblem, prefixes: Sequence[Sequence[str]]) -> list[float]:
        return [random.Random(digest(self.seed, problem.question, list(steps))).random() for steps in prefixes]


class MCScorer:
    """k rollouts per prefix in one engine call; a prefix whose newest step states a final answer
    is a finished solution and is graded as it stands (a rollout would add nothing). Each distinct
    answer is compared with a problem's gold once (core.search.answers.Grader)."""

    kind = "mc"

    def __init__(self, engine: Engine, k: int = 4, sampling: SamplingParams | None = None, *,
                 delimiter: str = "\n", seed: int = 0, name: str | None = None) -> None:  # fmt: skip
        if k < 1:
            raise ValueError("an MC value needs at least one rollout")
        self.engine, self.k, self.delimiter, self.seed = engine, k, delimiter, seed
        self.sampling = replace(sampling or SamplingParams(max_new_tokens=512, stop=POLICY_STOP), n=k)
        self.name = name or f"mc:{engine.info.model}:k{k}"
        self.cost = VerifierCost(parameters=parameter_count(engine))
        self.rollouts: list[SearchRollout] = []  # every rollout, for the record
        self._graders: dict[str, Grader] = {}  # by gold: the problems searched lately

    @property
    def fingerprint(self) -> dict:
        return {"kind": self.kind, "name": self.name, "model": self.engine.info.model,
                "model_fingerprint": self.engine.info.extra.get("fingerprint"), "k": self.k,
                "sampling": self.sampling.as_manifest(), "seed": self.seed, "grader": GRADER_NAME}  # fmt: skip

    def grader(self, gold: str) -> Grader:
        grader = self._graders.get(gold)
        if grader is None:
            if len(self._graders) >= 64:  # a job's problems one after another: keep memory bounded
                self._graders.clear()
            grader = self._graders[gold] = Grader(gold)
        return grader

    def score(self, problem: SearchProblem, prefixes: Sequence[Sequence[str]]) -> list[float]:
        scores: list[float | None] = [None] * len(prefixes)
        open_indices = []
        grader = self.grader(problem.gold)
        for index, steps in enumerate(prefixes):
            if steps and has_final_answer(steps[-1]):
                scores[index] = float(grader.grade(self.delimiter.join(steps)).correct)
            else:
                open_indices.append(index)
        if open_indices:
            prompts = [continuation_prompt(problem.context, prefixes[i], self.delimiter) for i in open_indices]
            # The seed is a function of the scorer's seed and what is asked, never of how many calls
            # came before: a resumed search that skips replayed calls draws what it would have drawn.
            params = replace(self.sampling, seed=None if self.seed is None else int(digest(self.seed, prompts), 16) >> 1)
            results = self.engine.generate(prompts, params)
            self.cost.tokens_scored += count_prompt_tokens(self.engine, prompts) or 0
            for index, samples in zip(open_indices, results):
                part = self.delimiter.join(prefixes[index])
                correct = 0
                for sample in samples:
                    graded = grader.grade(part + self.delimiter + sample.text)
                    correct += graded.correct
                    self.cost.tokens_generated += sample.num_tokens
                    self.rollouts.append(SearchRollout(tuple(prefixes[index]), sample.text, graded.answer,
                                                       graded.correct, sample.num_tokens, "scorer"))  # fmt: skip
                scores[index] = step_value(Counts(len(samples), correct)).soft
        return [float(s) for s in scores]


class JudgeScorer:
    """A judge's P(Yes) for the newest step, from core.verdicts' step template. A judge that puts
    no probability on any spelling of yes or no (P(Yes) undefined) scores 0: it vouches for
    nothing, so such a step ranks below every step it does vouch for."""

    kind = "judge"

    def __init__(self, engine: Engine, template=None, *, chat: bool | None = None,
                 sampling: SamplingParams | None = None, name: str | None = None) -> None:  # fmt: skip
        from core.verdicts import load_judge_template

        self.engine = engine
        self.template = template or load_judge_template("step")
        if self.template.kind != "step":
            raise ValueError(f"a search scores steps: the judge template must be a step template, not {self.template.kind!r}")
        self.chat = chat
        self.sampling = sampling or SamplingParams(n=4, max_new_tokens=256, temperature=0.7)
        self.name = name or f"judge:{engine.info.model}"
        self.cost = VerifierCost(parameters=parameter_count(engine))
        self._spellings = None

    @property
    def fingerprint(self) -> dict:
        fingerprint = {"kind": self.kind, "name": self.name, "model": self.engine.info.model,
                       "model_fingerprint": self.engine.info.extra.get("fingerprint"),
                       "template": self.template.name, "template_sha256": self.template.sha256,
                       "mode": self.template.mode, "chat": self.chat}  # fmt: skip
        if self.template.generative:
            fingerprint["sampling"] = self.sampling.as_manifest()
        return fingerprint

    def prompts(self, problem: SearchProblem, prefixes: Sequence[Sequence[str]]) -> list[str]:
        from core.verdicts import render_prompt

        prompts = []
        for steps in prefixes:
            steps = list(steps)
            text = self.template.fill(problem.question, "\n".join(steps), steps, len(steps) - 1)
            prompts.append(render_prompt(self.engine, text, self.chat)[0])
        return prompts

    def score(self, problem: SearchProblem, prefixes: Sequence[Sequence[str]]) -> list[float]:
        from core.verdicts import sampled_verdicts, score_yes_no, yes_no_spellings

        if not prefixes:
            return []
        prompts = self.prompts(problem, prefixes)
        self.cost.tokens_scored += count_prompt_tokens(self.engine, prompts) or 0
        if self.template.generative:
            results = self.engine.generate(prompts, self.sampling)
            self.cost.tokens_generated += sum(s.num_tokens for row in results for s in row)
            p_yes = [sampled_verdicts([s.text for s in row]).p_yes for row in results]
        else:
            if self._spellings is None:
                self._spellings = yes_no_spellings(self.engine)
            p_yes = [v.p_yes for v in score_yes_no(self.engine, prompts, self._spellings)]
        return [0.0 if p is None else float(p) for p in p_yes]


class PRMScorer:
    """A PRM's score of the newest step: the whole prefix is read in one forward pass (as the
    PRM was trained to read it) and the last scored position is taken."""

    kind = "prm"

    def __init__(self, engine, fmt, *, name: str | None = None) -> None:
        from core.prm import readout_for

        self.engine, self.fmt = engine, fmt
        self.readout = readout_for(fmt, engine.tokenizer)
        self.name = name or f"prm:{engine.info.model}"
        self.cost = VerifierCost(parameters=parameter_count(engine))

    @property
    def fingerprint(self) -> dict:
        return {"kind": self.kind, "name": self.name, "model": self.engine.info.model,
                "model_fingerprint": self.engine.info.extra.get("fingerprint"), "family": self.fmt.family,
                "format": self.fmt.as_dict(), "format_sha256": self.fmt.sha256}  # fmt: skip

    def score(self, problem: SearchProblem, prefixes: Sequence[Sequence[str]]) -> list[float]:
        from core.prm import build_input, check_length, scores_from_logits

        if not prefixes:
            return []
        inputs = []
        for steps in prefixes:
            prm_input = build_input(self.fmt, self.engine.tokenizer, problem.question, list(steps))
            check_length(prm_input, self.engine.max_length, "a search candidate")
            inputs.append(prm_input)
        self.cost.tokens_scored += sum(len(i.token_ids) for i in inputs)
        logits = self.engine.position_logits(inputs, self.readout)
        return [float(scores_from_logits(rows, self.readout)[0][-1]) for rows in logits]


class ProbeScorer:
    """A probe's P(correct) at the last token of the newest step, read from the same text and
    layer the probe was trained on (core.probes.probe_text; `policy-prompt` probes read the
    search's own policy context). Steps are joined by newlines, as the line splitter's
    trajectories the probe was trained on read."""

    kind = "probe"

    def __init__(self, engine, probe, *, template=None, name: str | None = None) -> None:
        from core.errors import UnsupportedByEngine

        if not hasattr(engine, "hidden_states"):
            raise UnsupportedByEngine(f"engine {engine.info.engine!r} gives no hidden states; run probes on transformers")
        self.engine, self.probe, self.template = engine, probe, template
        self.layer = probe.manifest.get("layer", -1)
        self.context = probe.manifest.get("context", "question")
        self.name = name or probe.manifest.get("judge", f"probe:{engine.info.model}")
        self.cost = VerifierCost(parameters=parameter_count(engine))

    @property
    def fingerprint(self) -> dict:
        return {"kind": self.kind, "name": self.name, "model": self.engine.info.model,
                "model_fingerprint": self.engine.info.extra.get("fingerprint"), "layer": self.layer,
                "context": self.context, "probe_sha256": self.probe.manifest.get("model_sha256")}  # fmt: skip

    def texts(self, problem: SearchProblem, prefixes: Sequence[Sequence[str]]) -> list[str]:
        from core.probes import probe_text

        trajectories = [{"question": problem.question, "solution": "\n".join(steps), "policy_prompt": problem.context}
                        for steps in prefixes]  # fmt: skip
        return [probe_text(t, self.context, self.template)[0] for t in trajectories]

    def score(self, problem: SearchProblem, prefixes: Sequence[Sequence[str]]) -> list[float]:
        import numpy as np

        if not prefixes:
            return []
        texts = self.texts(problem, prefixes)
        self.cost.tokens_scored += count_prompt_tokens(self.engine, texts) or 0
        states = self.engine.hidden_states(texts, [[len(text)] for text in texts], layer=self.layer)
        return [float(p) for p in self.probe.predict(np.stack([rows[0] for rows in states]))]


class ORMScorer:
    kind = "orm"

    def __init__(self, model, tokenizer, manifest: dict, *, name: str | None = None) -> None:
        self.model, self.tokenizer, self.manifest = model, tokenizer, manifest
        self.context = manifest.get("context", "question")
        self.name = name or manifest.get("judge", "orm")
        self.cost = VerifierCost(parameters=int(sum(p.numel() for p in model.parameters())))

    @classmethod
    def from_folder(cls, folder, *, device: str = "cpu") -> "ORMScorer":
        """A fine-tuned ORM saved by `stepscope train-orm` (its folder and manifest)."""
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from core.orm_training import read_manifest

        manifest = read_manifest(folder)
        model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).to(device).eval()
        return cls(model, AutoTokenizer.from_pretrained(folder), manifest)

    @property
    def fingerprint(self) -> dict:
        return {"kind": self.kind, "name": self.name, "fingerprint": self.manifest.get("fingerprint"),
                "context": self.context, "base": self.manifest.get("base")}  # fmt: skip

    def texts(self, problem: SearchProblem, prefixes: Sequence[Sequence[str]]) -> list[str]:
        from core.policy import load_template
        from core.probes import probe_text

        template = load_template(self.manifest.get("policy_template", {}).get("name", "policy_fewshot"))
        return [probe_text({"question": problem.question, "solution": "\n".join(steps),
                            "policy_prompt": problem.context}, self.context, template)[0] for steps in prefixes]  # fmt: skip

    def score(self, problem: SearchProblem, prefixes: Sequence[Sequence[str]]) -> list[float]:
        import math

        from core.orm_training import OrmExample, predict

        if not prefixes:
            return []
        ids = [self.tokenizer(text)["input_ids"] for text in self.texts(problem, prefixes)]
        self.cost.tokens_scored += sum(len(i) for i in ids)
        scores = predict(self.model, [OrmExample(0, 0, i, math.nan) for i in ids])
        return [float(p) for p in scores]


SCORER_KINDS = ("judge", "prm", "probe", "orm", "mc", "random")  # the kinds with an adapter here
