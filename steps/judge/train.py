"""Recipe: train the judge on preference pairs (paper Eq. 3), with an easy-pairs-first curriculum.

    python -m steps.judge.train --profile tiny            # configs/tiny.yaml section judge; paths from steps/paths.py
    accelerate launch -m steps.judge.train --profile flux --set init_dir=/models/Qwen2.5-VL-7B-Instruct   # LoRA

Every pair (winner w, loser l, task, dimension, prompt) is used in both orders:
loss = CE(Yes | w, l, q) + CE(No | l, w, q), averaged, with q = judge_query(task, dimension, prompt).
Pairs are split by condition (no condition on both sides; steps.judge.agreement.split_of) into training pairs and
the held-out *selection* pairs, which choose the saved step (every ``select_every`` steps; the best mean agreement
over the cells wins; recorded with its score in training.json and MLflow). The gate reads neither: it reads the
agreement test set (steps.data.agreement_set), whose conditions no training split has. For the first
``easy_fraction`` of training, most batches are EASY pairs built from the world's ground truth (the target
against a corrupted copy: wrong colour, object left, noise, blur, drift outside the mask) -- measured here,
preference training from a tiny judge otherwise stays at chance for minutes. Smoke/tiny: full fine-tune;
flux: LoRA (peft) with bf16 and gradient checkpointing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from steps.config import Profiled, field
from steps.fields import (
    Attack,
    Batched,
    Checkpoints,
    Optimiser,
    PreferenceSplit,
    Scale,
    Seeded,
    ShowsSource,
    Threaded,
)
from steps.judge.easy_pairs import CANDIDATE_EASY_DIMENSIONS, candidate_easy_pair, easy_item
from steps.judge.losses import attacked, yes_no_loss
from steps.paths import TINY, ArtifactPaths
from steps.training.recipe import Recipe, due, progress, run_cli
from steps.vocabulary import masked_source


@dataclass(frozen=True)
class JudgeConfig(Profiled, PreferenceSplit, Optimiser, Batched, Checkpoints, Attack, Scale, ShowsSource, Seeded, Threaded):
    """Judge training on preference pairs. A batch is that many pairs, each used in both orders (2x rows); AdamW
    with a warmup of min(warmup, steps / 10 + 1) steps, then cosine. The attack (steps.fields.Attack) is PGD on
    a share of each batch's preference pairs within ``adv_rms``, labels kept: a perturbed winner must still win,
    a perturbed loser must not start winning. Scale (steps.fields.Scale): LoRA on the language model (flux)."""

    SECTION = "judge"  # of configs/<profile>.yaml

    profile: str = field("tiny", "judge size: smoke | tiny (built from config) | flux (Qwen2.5-VL from init_dir)")
    init_dir: str = field("", "judge to start from (judge_pretrain output, or Qwen2.5-VL dir); empty = fresh")
    train_dir: str = field(str(TINY.train), "conditions the pairs refer to (ground truth for easy pairs)")
    out_dir: str = field(str(TINY.judge), "where the trained judge is saved")
    easy_fraction: float = field(0.3, "share of training (from the start) dominated by easy ground-truth pairs")
    easy_prob_early: float = field(0.75, "probability a batch is easy during the easy phase")
    easy_prob_late: float = field(0.1, "probability a batch is easy afterwards (keeps the anchor)")
    easy_candidate_share: float = field(0.5, "share of easy pairs built from real candidates (candidate_easy_pair)")
    select_every: int = field(100, "evaluate the held-out selection pairs every N steps (and at the end); the step "
                                   "with the best mean agreement over the cells is saved; 0 = the last step")
    eval_every: int = field(0, "held-out agreement per cell every N steps (curves in MLflow); 0 = off")

    def __post_init__(self):
        if self.profile not in ("smoke", "tiny", "flux"):
            raise ValueError(f"unknown profile {self.profile!r}")
        if not 0 <= self.easy_fraction <= 1 or not 0 < self.heldout_fraction < 1:
            raise ValueError("easy_fraction must be in [0, 1] and heldout_fraction in (0, 1)")
        if self.select_every < 0:
            raise ValueError(f"select_every must be >= 0, got {self.select_every!r}")
        if self.profile == "flux" and not self.init_dir:
            raise ValueError("flux needs init_dir: a local Qwen2.5-VL-7B-Instruct directory")

    @classmethod
    def path_defaults(cls, paths: ArtifactPaths, **context: Any) -> dict[str, Any]:
        return dict(pairs_dir=str(paths.preferences), train_dir=str(paths.train), init_dir=str(paths.judge_pretrained),
                    out_dir=str(paths.judge))


def trained_with_source(judge_dir) -> bool:
    """Whether the judge in ``judge_dir`` was trained with the masked source as a third image (its training
    record says so; `Judge.compare` then shows it); RL must show it the same way."""
    from steps.models.judge import training_record

    return bool(training_record(judge_dir).get("config", {}).get("show_source", False))


def selection_score(judge, data, show_source: bool) -> float:
    """Mean over cells of the judge's agreement with the labels of the selection pairs (the held-out slice)."""
    return heldout_metrics(judge, data, show_source)["judge/heldout_accuracy"]


def heldout_metrics(judge, data, show_source: bool) -> dict[str, float]:
    """Held-out accuracy per cell (against the annotated labels) and its mean: the agreement curve."""
    from steps.judge.agreement import agreement_table

    judge.eval()
    table = agreement_table(judge, data, {}, show_source)
    judge.train()
    out = {f"judge/heldout_accuracy/{cell}": r["accuracy"] for cell, r in table.items()}
    out["judge/heldout_accuracy"] = float(np.mean(list(out.values())))
    clean = [r["clean_accuracy"] for r in table.values() if r["clean_accuracy"] is not None]
    if clean:
        out["judge/heldout_clean_accuracy"] = float(np.mean(clean))
    return out


def build_or_load_judge(cfg: JudgeConfig):
    from steps.models.judge import Judge
    from steps.models.judge_spec import spec_for

    if cfg.init_dir and Path(cfg.init_dir).exists():
        judge = Judge.load(cfg.init_dir)
        if judge.record.get("foundation") and judge.shows_source != cfg.show_source:
            raise ValueError(f"{cfg.init_dir}: this foundation judge was trained with show_source="
                             f"{judge.shows_source}; fine-tune it the same way (--set show_source="
                             f"{str(judge.shows_source).lower()})")
    elif cfg.profile == "flux":
        raise FileNotFoundError(f"judge init_dir {cfg.init_dir!r} does not exist")
    else:
        judge = Judge.build(spec_for(cfg.profile), seed=cfg.seed)
    if cfg.lora_rank > 0:
        from peft import LoraConfig, get_peft_model

        judge.model = get_peft_model(judge.model, LoraConfig(r=cfg.lora_rank, lora_alpha=2 * cfg.lora_rank,
                                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    if cfg.gradient_checkpointing:
        judge.model.gradient_checkpointing_enable()
    return judge


# every field but these must match the checkpoint's to resume from it
JUDGE_RESUME_MUST_MATCH = tuple(f.name for f in fields(JudgeConfig)
                                if f.name not in ("threads", "log_every", "eval_every", "out_dir", "checkpoint_dir",
                                                  "checkpoint_every"))


class JudgeRecipe(Recipe):
    """Judge fine-tuning on preference pairs: setup -> train -> the saved judge and its training record
    (steps/training/recipe.py). With a ``checkpoint_dir`` it writes a checkpoint every ``checkpoint_every`` steps
    and resumes exactly from the newest: the weights, optimizer, scheduler, the batch generator's state and the selection's best step."""

    name = "judge"

    def __init__(self, cfg: JudgeConfig, log=None):
        super().__init__(cfg, log)

    def setup(self) -> JudgeRecipe:
        import torch

        from steps.judge.agreement import load_preference_data
        from steps.runtime import setup
        from steps.training.optim import adamw

        cfg = self.cfg
        setup(threads=cfg.threads)
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)  # carried from step to step: its state is checkpointed
        data = self.data = load_preference_data(cfg.pairs_dir, cfg.train_dir, cfg.heldout_fraction)
        samples = self.samples = data["samples"]
        self.train_pairs = data["train"]
        self.easy_samples = [s for s in samples.values() if s.id in data["train_conditions"]] or list(samples.values())
        if not self.train_pairs:
            raise ValueError(f"{cfg.pairs_dir}/pairs.jsonl: no training pairs after the held-out split")
        self.judge = build_or_load_judge(cfg)
        self.judge.train()
        self.optimizer, self.scheduler = adamw([p for p in self.judge.parameters() if p.requires_grad], cfg.lr,
                                               cfg.weight_decay, min(cfg.warmup, cfg.steps // 10 + 1), cfg.steps)
        self.easy_until = int(cfg.easy_fraction * cfg.steps)
        # real candidates of TRAINING conditions (never a held-out one) for candidate-based easy pairs
        self.cand_pool = sorted({(p.condition_id, q) for p in self.train_pairs for q in (p.winner, p.loser)})
        self.src_of = {cid: masked_source(s.image, s.mask) for cid, s in samples.items()} if cfg.show_source \
            else {cid: s.image for cid, s in samples.items()}
        self.curve, self.accs, self.best, self.selected, self.scores = [], [], None, None, []
        self.resume_from(cfg.checkpoint_dir)
        return self

    def load_checkpoint(self, folder: Path) -> dict[str, Any]:
        best = json.loads((folder / "state.json").read_text()).get("best")
        state, tensors = self.checkpointer.restore(
            folder, {"judge": self.judge.model}, self.optimizer, self.scheduler, ("best",) if best else (),
            config=asdict(self.cfg), must_match=JUDGE_RESUME_MUST_MATCH)
        self.rng.bit_generator.state = state["rng"]
        self.curve, self.accs = list(state["curve"]), list(state["accs"])
        self.scores = [tuple(x) for x in state.get("selection_scores", [])]
        self.best = (best["step"], best["score"], tensors["best"]) if best else None
        return state

    def save_checkpoint(self, step: int) -> Path:
        best = {"step": self.best[0], "score": self.best[1]} if self.best else None
        return self.checkpointer.save_training(
            step, {"judge": self.judge.model}, self.optimizer, self.scheduler,
            {"config": asdict(self.cfg), "rng": self.rng.bit_generator.state, "curve": self.curve,
             "accs": self.accs, "best": best, "selection_scores": self.scores,
             "seconds": self.seconds_including_resumed()},
            tensors={"best": self.best[2]} if self.best else None)

    def batch(self, easy: bool):
        """One step's pairs, each in both orders: (groups of images, queries, labels (True = Yes))."""
        import torch

        from steps.preferences import judge_query
        from steps.world import dimensions_for

        cfg, rng, samples, images = self.cfg, self.rng, self.samples, self.data["images"]
        firsts, seconds, sources, queries = [], [], [], []
        for _ in range(cfg.batch_size):
            if easy and self.cand_pool and rng.random() < cfg.easy_candidate_share:
                cid, path = self.cand_pool[int(rng.integers(len(self.cand_pool)))]
                s = samples[cid]
                dims = [d for d in dimensions_for(s.task, s.prompt) if d in CANDIDATE_EASY_DIMENSIONS]
                dim = dims[int(rng.integers(len(dims)))]
                w, lo = candidate_easy_pair(s, images[path], dim, rng)
                task, prompt, src = s.task, s.prompt, self.src_of[s.id]
            elif easy:
                s, dim, w, lo = easy_item(self.easy_samples, rng)
                task, prompt, src = s.task, s.prompt, self.src_of[s.id]
            else:
                p = self.train_pairs[int(rng.integers(len(self.train_pairs)))]
                w, lo, task, dim, prompt = images[p.winner], images[p.loser], p.task, p.dimension, p.prompt
                src = self.src_of[p.condition_id]
            q = judge_query(task, dim, prompt)
            firsts += [w, lo]
            seconds += [lo, w]
            sources += [src, src]
            queries += [q, q]
        labels = torch.tensor([True, False] * cfg.batch_size)
        groups = [np.stack(firsts), np.stack(seconds)] + ([np.stack(sources)] if cfg.show_source else [])
        return groups, queries, labels

    def train_step(self, step: int) -> dict[str, float]:
        from steps.training.recipe import optimizer_step

        cfg, judge = self.cfg, self.judge
        easy = self.rng.random() < (cfg.easy_prob_early if step < self.easy_until else cfg.easy_prob_late)
        groups, queries, labels = self.batch(easy)
        n_adv = int(round(cfg.adv_share * cfg.batch_size)) if not easy and not cfg.show_source else 0
        if n_adv:
            groups = attacked(judge, groups, queries, n_adv, cfg.adv_rms, cfg.adv_steps)
        loss, margin = yes_no_loss(judge, groups, queries, labels)
        optimizer_step(loss, self.optimizer, self.scheduler, judge.parameters(), clip=1.0)
        return {"loss": loss.item(), "accuracy": float(((margin > 0) == labels).float().mean()), "easy": easy}

    def train(self) -> dict[str, Any]:

        cfg, judge, data = self.cfg, self.judge, self.data
        for step in progress(range(self.start_step, cfg.steps), self.name):
            out = self.train_step(step)
            self.curve.append(out["loss"])
            self.accs.append(out["accuracy"])
            if due(step, cfg.log_every, cfg.steps - 1):
                self.log({"judge/loss": float(np.mean(self.curve[-cfg.log_every:])),
                          "judge/train_accuracy": float(np.mean(self.accs[-cfg.log_every:])),
                          "judge/easy_batch": float(out["easy"])}, step)
            if cfg.eval_every and data["heldout"] and due(step + 1, cfg.eval_every, cfg.steps):
                self.log(heldout_metrics(judge, data, cfg.show_source), step + 1)
            if cfg.select_every and data["heldout"] and due(step + 1, cfg.select_every, cfg.steps):
                score = selection_score(judge, data, cfg.show_source)
                self.scores.append((step + 1, score))
                self.log({"judge/selection_agreement": score}, step + 1)
                if self.best is None or score > self.best[1]:
                    self.best = (step + 1, score, {k: v.detach().clone() for k, v in judge.model.state_dict().items()})
            if self.checkpointer and due(step + 1, cfg.checkpoint_every) and step + 1 < cfg.steps:
                self.save_checkpoint(step + 1)
        judge.eval()
        if self.best is not None:  # the step chosen on the selection pairs (never the agreement test set)
            judge.model.load_state_dict(self.best[2])
            self.selected = {"step": self.best[0], "selection_agreement": self.best[1],
                             "n_selection_pairs": len(data["heldout"]), "scores": [list(x) for x in self.scores],
                             "selection_set": f"held-out slice of the preference pairs ({cfg.heldout_fraction:.0%} of "
                                              "their conditions by hash; steps.judge.agreement.split_of)"}
            self.log({"judge/selected_step": float(self.best[0]), "judge/selected_agreement": self.best[1]}, cfg.steps)
        if cfg.lora_rank > 0:
            judge.model = judge.model.merge_and_unload()
        summary = self.summary()
        judge.save(cfg.out_dir, record=summary)  # the record inside the one atomic write
        return summary

    def summary(self) -> dict[str, Any]:
        from steps.preferences import QUERY_TEMPLATE_VERSION

        return {"out_dir": self.cfg.out_dir, "n_train_pairs": len(self.train_pairs),
                "n_heldout_pairs": len(self.data["heldout"]), "n_selection_pairs": len(self.data["heldout"]),
                "final_loss": float(np.mean(self.curve[-20:])),
                "seconds": self.seconds(), "query_template_version": QUERY_TEMPLATE_VERSION,
                "config": asdict(self.cfg), "loss_curve": self.curve, "selected": self.selected}


def train_judge(cfg: JudgeConfig, log=None) -> dict[str, Any]:
    """Train and save the judge (`JudgeRecipe`, resuming from ``checkpoint_dir`` when it holds a checkpoint);
    returns a summary (the agreement table is steps.judge.agreement's job)."""
    return JudgeRecipe(cfg, log).run()


def main(argv: list[str] | None = None) -> None:
    run_cli(JudgeConfig, __doc__, train_judge, argv, drop=("loss_curve",))


if __name__ == "__main__":
    main()
