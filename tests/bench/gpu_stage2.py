"""Stage-2 latency on one GPU, at the preprint's model sizes, with random weights (no download).

    python -m tests.bench.gpu_stage2 [--new-tokens 32] [--repeats 5] [--tiny] [--device cuda]

M is a LLaVA-1.5-7B configuration (CLIP ViT-L/14-336 + a Llama-2-7B language model, 576 image
tokens) and the RM a ~3B Qwen2.5-3B-Instruct configuration (text-only), both built from their
configs in code, random-initialised, in bf16. Prompt lengths follow what the rectification loop
sends: A_0 = M(image + question), F_k = RM(critique prompt + evidence, text), A_{k+1} =
M(image + revision prompt). Every call decodes greedily exactly ``--new-tokens`` tokens (random
weights would stop at a random EOS otherwise), so the figures are per call of a fixed length.

Reported (median of ``--repeats`` after one warm-up): ms for A_0, for one RM call, for one
revision, and for one full rectification step (RM critique + M revision), next to the
preprint's Table 4 (A100: 150 ms M, 80 ms RM, 380 ms per step) with the ratio to each.

``--tiny`` swaps in tiny configs (fp32 on the CPU unless --device says otherwise) so the script
can be smoke-tested anywhere: its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

PAPER_MS = {"m_answer_A0": 150.0, "rm_critique": 80.0, "full_step": 380.0}  # Table 4, A100


def llava_7b_config(tiny: bool) -> Any:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    if tiny:
        vision = CLIPVisionConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=56,
            patch_size=14,
            projection_dim=64,
        )
        text = LlamaConfig(
            vocab_size=32064,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
        )
    else:  # llava-hf/llava-1.5-7b-hf
        vision = CLIPVisionConfig(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=336,
            patch_size=14,
            projection_dim=768,
            hidden_act="quick_gelu",
        )
        text = LlamaConfig(
            vocab_size=32064,
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            max_position_embeddings=4096,
            rms_norm_eps=1e-5,
        )
    return LlavaConfig(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        image_token_id=32000,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
    )


def rm_3b_config(tiny: bool) -> Any:
    from transformers import Qwen2Config

    if tiny:
        return Qwen2Config(
            vocab_size=151936,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    return Qwen2Config(  # Qwen/Qwen2.5-3B-Instruct
        vocab_size=151936,
        hidden_size=2048,
        intermediate_size=11008,
        num_hidden_layers=36,
        num_attention_heads=16,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
    )


def build(model_class: Any, config: Any, device: Any, dtype: Any) -> Any:
    """A random-initialised model made directly on ``device`` in ``dtype`` (no CPU copy)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = model_class(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def timed_generate(model: Any, inputs: dict[str, Any], new_tokens: int, device: Any) -> float:
    """Seconds for one greedy ``generate`` of exactly ``new_tokens`` tokens."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    with torch.inference_mode():
        model.generate(
            **inputs,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
        )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def m_inputs(config: Any, text_tokens: int, device: Any, dtype: Any) -> dict[str, Any]:
    """One image's image tokens followed by ``text_tokens`` random text ids, as the processor
    would lay them out, and random pixels."""
    import torch

    vision = config.vision_config
    image_tokens = (vision.image_size // vision.patch_size) ** 2
    generator = torch.Generator().manual_seed(0)
    text = torch.randint(3, 31999, (1, text_tokens), generator=generator)
    ids = torch.cat(
        [text[:, :2], torch.full((1, image_tokens), config.image_token_id), text[:, 2:]], 1
    )
    pixels = torch.randn(1, 3, vision.image_size, vision.image_size, generator=generator)
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "pixel_values": pixels.to(device=device, dtype=dtype),
    }


def rm_inputs(tokens: int, device: Any) -> dict[str, Any]:
    import torch

    ids = torch.randint(3, 150000, (1, tokens), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


def median_ms(samples: list[float]) -> float:
    return round(1000 * statistics.median(samples), 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.gpu_stage2",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens each call decodes")
    parser.add_argument("--question-tokens", type=int, default=24, help="A_0 prompt text")
    parser.add_argument("--revision-tokens", type=int, default=120, help="revision prompt text")
    parser.add_argument("--rm-tokens", type=int, default=320, help="critique prompt + evidence")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
    parser.add_argument("--device", default="", help="default: cuda if present, else cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny configs: a smoke test")
    args = parser.parse_args(argv)

    import torch
    from transformers import LlavaForConditionalGeneration, Qwen2ForCausalLM

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    started = time.perf_counter()
    m_config = llava_7b_config(args.tiny)
    m = build(LlavaForConditionalGeneration, m_config, device, dtype)
    rm = build(Qwen2ForCausalLM, rm_3b_config(args.tiny), device, dtype)
    build_s = time.perf_counter() - started

    answer = m_inputs(m_config, args.question_tokens, device, dtype)
    revision = m_inputs(m_config, args.revision_tokens, device, dtype)
    critique = rm_inputs(args.rm_tokens, device)
    for model, inputs in ((m, answer), (m, revision), (rm, critique)):  # warm-up
        timed_generate(model, inputs, args.new_tokens, device)
    a0, rm_calls, revisions, steps = [], [], [], []
    for _ in range(args.repeats):
        a0.append(timed_generate(m, answer, args.new_tokens, device))
        rm_s = timed_generate(rm, critique, args.new_tokens, device)
        revision_s = timed_generate(m, revision, args.new_tokens, device)
        rm_calls.append(rm_s)
        revisions.append(revision_s)
        steps.append(rm_s + revision_s)
    measured = {
        "m_answer_A0": median_ms(a0),
        "rm_critique": median_ms(rm_calls),
        "m_revision": median_ms(revisions),
        "full_step": median_ms(steps),
    }
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "tiny": args.tiny,
        "m_parameters_b": round(sum(p.numel() for p in m.parameters()) / 1e9, 3),
        "rm_parameters_b": round(sum(p.numel() for p in rm.parameters()) / 1e9, 3),
        "new_tokens": args.new_tokens,
        "prompt_tokens": {
            "A0": int(answer["input_ids"].shape[1]),
            "revision": int(revision["input_ids"].shape[1]),
            "rm": int(critique["input_ids"].shape[1]),
        },
        "build_s": round(build_s, 1),
        "ms": measured,
        "paper_table4_a100_ms": PAPER_MS,
        "ratio_to_paper": {k: round(measured[k] / v, 2) for k, v in PAPER_MS.items()},
    }
    if device.type == "cuda":
        report["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 1)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
