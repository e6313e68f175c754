"""WSPO (arXiv 2410.18640): the strong student learns the alignment *shift* of a weak teacher.

Weak side (teacher actor `teacher_0`): weak reference = its `default` adapter after SFT on D_w
chosen (`wspo.weak_sft: false`: the model as loaded, e.g. an Instruct checkpoint; with
`wspo.weak_reference: base`, the weak base with the adapter disabled); weak aligned = its `aligned`
adapter, the reference further trained by DPO on D_w pairs, referenced to the weak SFT model.
The weak per-token log-probs of the training responses under both are computed once, cached in the
run directory and shipped to the student as float lists. Strong side (the student): its `default`
adapter, optionally SFT on D_w chosen first (`wspo.strong_sft`), which is then its start and its
reference (`reference: round_start`; else the model as loaded, adapter disabled); loss `wspo_loss`
with gamma = `train.wspo.shift_scale`. Baselines on the same data and budget start where WSPO
does and live on the student as extra adapters: SFT on chosen, DPO.
rounds[0] is before WSPO training (after the SFT stages), rounds[1] after.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging

from agents.templates import as_transcript
from orchestrator import calls
from orchestrator.algorithms.base import STUDENT, Algorithm, register
from tasks.errors import BadInput

log = logging.getLogger("orchestrator")
CACHE_NAME = "wspo_weak_logps.json"


class TokenizerMismatch(BadInput):
    """Weak and strong models tokenize differently, so their per-token log-probs cannot be aligned."""


@register
class WSPO(Algorithm):
    name = "wspo"
    can_add_teachers = False  # one weak model
    adapters = ("aligned", "sft_baseline", "dpo_baseline")

    def __init__(self, controller):
        super().__init__(controller)
        self.weak_cache_hits = 0

    def total_rounds(self) -> int:
        return 1

    @property
    def weak(self) -> str:
        return self.ctl.teachers[0]

    def _train(self, key: str):
        return getattr(self.config.train, key)

    def _examples(self) -> list[dict]:
        return [{"prompt": ex.prompt, "response": ex.chosen} for ex in self.ctl.task.d_w]

    def _pairs(self) -> list[dict]:
        return [{"prompt": ex.prompt, "chosen": ex.chosen, "rejected": ex.rejected} for ex in self.ctl.task.d_w]

    def initialise(self) -> None:
        ctl = self.ctl
        if len(ctl.teachers) > 1:
            log.warning("WSPO uses one weak model; teachers beyond %s are evaluated but not used", self.weak)
        self.check_tokenizers()
        wspo = self.config.wspo
        sft_stages = {}
        if wspo.weak_sft:
            sft_stages[self.weak] = calls.train(self._examples(), "sft", self._train("teacher_sft"))
        if wspo.strong_sft:
            sft_stages[STUDENT] = calls.train(self._examples(), "sft", self._train("strong_sft"))
        if sft_stages:  # both sides' SFT run side by side
            ctl.stage("sft", sft_stages, mutating=True)
        ctl.stage("weak_dpo", {self.weak: calls.train(self._pairs(), "dpo", self._train("weak_dpo"),
                                                      adapter="aligned", init_from="default")}, mutating=True)

    def initialise_teacher(self, name: str) -> None:
        raise RuntimeError("WSPO has one weak model; add_teacher applies to MACPO runs")

    def check_tokenizers(self) -> None:
        """Same text must give the same token ids on both sides, or the shift cannot be transferred."""
        probe = [as_transcript(ex.prompt) + ex.chosen for ex in self.ctl.task.d_w[:16]]
        ids = self.ctl.stage("tokenizer_check", {a: calls.token_ids(probe) for a in (STUDENT, self.weak)}).results
        if ids[STUDENT] != ids[self.weak]:
            raise TokenizerMismatch(
                f"WSPO needs weak and strong models with the same tokenizer: {self.ctl.teacher_spec(self.weak).name_or_path} "
                f"and {self.config.student.name_or_path} tokenize the training text differently"
            )

    def weak_logps(self) -> tuple[list[list[float]], list[list[float]]]:
        """Per-token log-probs under weak aligned and weak reference, from the run's cache if present."""
        ctl = self.ctl
        examples = self._examples()
        reference_adapter = None if self.config.wspo.weak_reference == "base" else "default"
        key = hashlib.sha256(json.dumps([examples, ctl.teacher_spec(self.weak).name_or_path, reference_adapter,
                                         self.config.wspo.weak_sft,
                                         dataclasses.asdict(self._train("teacher_sft")), dataclasses.asdict(self._train("weak_dpo"))],
                                        sort_keys=True).encode()).hexdigest()
        cached = ctl.read_cache(CACHE_NAME)
        if cached is not None and cached.get("key") == key:
            self.weak_cache_hits += 1
            ctl.log_event("wspo_cache", hit=True, name=CACHE_NAME)
            return cached["aligned"], cached["reference"]
        prompts = [e["prompt"] for e in examples]
        responses = [e["response"] for e in examples]
        aligned = ctl.stage("weak_logps_aligned", {self.weak: calls.score("token_logprobs", prompts, responses, adapter="aligned")})
        reference = ctl.stage("weak_logps_reference",
                              {self.weak: calls.score("token_logprobs", prompts, responses, adapter=reference_adapter)})
        ctl.write_cache(CACHE_NAME, {"key": key, "aligned": aligned.results[self.weak], "reference": reference.results[self.weak]})
        ctl.log_event("wspo_cache", hit=False, name=CACHE_NAME)
        return aligned.results[self.weak], reference.results[self.weak]

    def round(self, index: int) -> None:
        ctl = self.ctl
        examples = self._examples()
        aligned, reference = self.weak_logps()
        wspo_examples = [dict(ex, weak_aligned_logps=a, weak_ref_logps=r) for ex, a, r in zip(examples, aligned, reference)]
        budget = self._train("wspo")
        ctl.stage("student_sft_baseline", {STUDENT: calls.train(examples, "sft", budget, adapter="sft_baseline",
                                                                init_from="default")}, mutating=True)
        ctl.stage("student_dpo_baseline", {STUDENT: calls.train(self._pairs(), "dpo", self._train("student_dpo"),
                                                                adapter="dpo_baseline", init_from="default")}, mutating=True)
        ctl.stage("student_wspo", {STUDENT: calls.train(wspo_examples, "wspo", budget)}, mutating=True)

    def eval_extra(self, index: int) -> dict[str, tuple[str, str]]:
        if index == 0:
            return {"weak_aligned": (self.weak, "aligned")}
        return {"student_sft": (STUDENT, "sft_baseline"), "student_dpo": (STUDENT, "dpo_baseline")}

    def summary_extra(self, rounds: list[dict], baselines: dict[str, dict]) -> dict:
        """The student after WSPO beside its baselines and the weak aligned model (headline rewards)."""
        if len(rounds) < 2:
            return {}
        out = {"wspo": {"student_wspo": rounds[-1]["eval"][STUDENT]["reward"]}}
        for name in ("student_sft", "student_dpo", "weak_aligned"):
            if name in baselines:
                out["wspo"][name] = baselines[name]["reward"]
        return out

    def state_dict(self) -> dict:
        return {"weak_cache_hits": self.weak_cache_hits}

    def load_state_dict(self, state: dict) -> None:
        self.weak_cache_hits = state.get("weak_cache_hits", 0)
