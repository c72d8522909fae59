"""The flux path of judge training (LoRA via peft, adapters merged on save) runs at smoke size."""

from __future__ import annotations

import numpy as np

from steps.judge.train import JudgeConfig, build_or_load_judge


def test_lora_judge_trains_only_adapters_and_merges(tmp_path):
    import torch

    cfg = JudgeConfig(profile="smoke", init_dir="", lora_rank=4, out_dir=str(tmp_path / "j"))
    judge = build_or_load_judge(cfg)
    trainable = {n for n, p in judge.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in judge.model.named_parameters() if "lora_" not in n}
    opt = torch.optim.AdamW([p for p in judge.parameters() if p.requires_grad], lr=1e-2)
    imgs = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    from steps.judge.losses import yes_no_loss

    for _ in range(3):
        loss, _ = yes_no_loss(judge, [imgs, imgs[::-1].copy()], ["Is the first image better?"] * 2,
                              torch.tensor([True, False]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = {n: p for n, p in judge.model.named_parameters() if "lora_" not in n}
    assert all(torch.equal(before[n], after[n]) for n in before), "base weights must stay frozen"
    judge.model = judge.model.merge_and_unload()
    judge.save(cfg.out_dir)
    from steps.models.judge import Judge

    reloaded = Judge.load(cfg.out_dir)
    assert not any("lora_" in n for n, _ in reloaded.model.named_parameters())
    with torch.no_grad():
        a = judge.p_yes(imgs, imgs[::-1].copy(), ["q"] * 2)
        b = reloaded.p_yes(imgs, imgs[::-1].copy(), ["q"] * 2)
    assert torch.allclose(a, b, atol=1e-5)
