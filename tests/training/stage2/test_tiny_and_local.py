"""The tiny models load through the real Auto* paths and serve as Generators."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from PIL import Image

from training.stage2.generation import Generator
from training.stage2.generators import make_generator
from training.stage2.local import LocalGenerator
from training.stage2.tiny import IMAGE, build_tiny_llava, main


def png(colour: tuple[int, int, int] = (200, 20, 20)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (48, 40), colour).save(out, format="PNG")
    return out.getvalue()


def test_tiny_llava_loads_through_the_auto_classes(tiny_llava_dir: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_llava_dir)
    processor = AutoProcessor.from_pretrained(tiny_llava_dir)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert processor.tokenizer.convert_tokens_to_ids(IMAGE) == model.config.image_token_id
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(images=[Image.open(io.BytesIO(png()))], text=[text], return_tensors="pt")
    # one image token per vision patch: (32 / 8) ** 2 after the CLS token is dropped
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 16
    logits = model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape


def test_the_tokenizer_round_trips_any_text(tiny_llava_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llava_dir)
    text = 'The cüp is at [3, 4.5] — left of "it"!\nNo further corrections needed.'
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_chat_template_marks_only_the_assistant_answer(tiny_rm_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_rm_dir)
    out = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A red cup."}],
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    kept = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(kept) == "A red cup." + tokenizer.eos_token


def test_building_is_deterministic_under_a_seed(tmp_path: Path) -> None:
    a = build_tiny_llava(tmp_path / "a", seed=5)
    b = build_tiny_llava(tmp_path / "b", seed=5)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()


def test_the_cli_writes_both_models(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    assert (tmp_path / "llava" / "model.safetensors").is_file()
    assert (tmp_path / "rm" / "tokenizer.json").is_file()


def test_local_generator_answers_with_and_without_the_image(tiny_llava_dir: Path) -> None:
    generator = make_generator(str(tiny_llava_dir), device="cpu", max_new_tokens=6)
    assert isinstance(generator, LocalGenerator) and isinstance(generator, Generator)
    assert generator.vision
    red = asyncio.run(generator.generate("Where is the red square?", image=png()))
    blind = asyncio.run(generator.generate("Where is the red square?"))
    assert red.latency_s > 0 and red.completion_tokens >= 1
    assert red.prompt_tokens == blind.prompt_tokens + 16 + 1  # image tokens and the newline
    again = asyncio.run(generator.generate("Where is the red square?", image=png()))
    assert again.text == red.text  # greedy decoding is repeatable


def test_local_generator_serialises_concurrent_calls(tiny_rm_dir: Path) -> None:
    generator = LocalGenerator.from_pretrained(str(tiny_rm_dir), max_new_tokens=4)
    assert not generator.vision

    async def many() -> list[str]:
        results = await asyncio.gather(*(generator.generate(f"q{i}") for i in range(6)))
        return [r.text for r in results]

    texts = asyncio.run(many())
    alone = [generator.generate_sync(f"q{i}").text for i in range(6)]
    assert texts == alone


def test_a_text_model_refuses_vision(tiny_rm_dir: Path) -> None:
    with pytest.raises(Exception, match="text-only"):
        LocalGenerator.from_pretrained(str(tiny_rm_dir), vision=True)


def test_concurrent_calls_are_batched_with_the_same_answers(tiny_llava_dir: Path) -> None:
    generator = LocalGenerator.from_pretrained(str(tiny_llava_dir), max_new_tokens=6, max_batch=3)
    requests = [
        ("Where is the red square?", png((200, 0, 0))),
        ("Hi", png((0, 0, 200))),
        ("What colour is the circle on the left of the picture?", png((0, 200, 0))),
        ("And the last one?", png((9, 9, 9))),
    ]
    alone = [generator.generate_sync(prompt, image=image) for prompt, image in requests]

    async def together() -> list:
        return await asyncio.gather(*(generator.generate(p, image=i) for p, i in requests))

    batched = asyncio.run(together())
    assert [b.text for b in batched] == [a.text for a in alone]
    assert [b.prompt_tokens for b in batched] == [a.prompt_tokens for a in alone]
    # the first three shared one generate (batch size 3), the fourth ran alone
    assert len({b.latency_s for b in batched[:3]}) == 1
    assert batched[3].latency_s != batched[0].latency_s


def test_a_batch_failure_reaches_every_caller(tiny_rm_dir: Path) -> None:
    generator = LocalGenerator.from_pretrained(str(tiny_rm_dir), max_new_tokens=2, max_batch=4)

    async def together() -> list:
        calls = [generator.generate("fine"), generator.generate("fine", max_new_tokens=-1)]
        return await asyncio.gather(*calls, return_exceptions=True)

    ok, failed = asyncio.run(together())
    assert ok.completion_tokens >= 1 and isinstance(failed, Exception)
