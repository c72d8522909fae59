"""The two models of OneReward at every profile: the fill policy (FluxFillPipeline) and the VLM judge.

Submodules (import them directly; nothing heavy is imported here):
- `policy`: PolicySpec / POLICY_SPECS, build_tiny_fill_pipeline, save_pipeline, load_fill_pipeline;
- `denoise`: encode_conditions, denoise (grad through one step), decode, generate;
- `judge`: JudgeSpec / JUDGE_SPECS, Judge (p_yes, margin, answer_logits, save/load);
- `judge_preprocess`: differentiable Qwen2-VL image preprocessing;
- `tokenizers`: the locally trained CLIP / T5 / Qwen tokenizers of the tiny profiles.
"""
