"""The sequence contract: every path a model reads or trains through sees the reasoner's own generation
sequence -- chat prompt (system = the reasoner's task prompt), the trace as the assistant turn, then
the end-of-turn token, whose hidden state is the embedding.

The expected ids are written here by hand from the chat template, not with ``tte_hf.models.tte.inputs``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling
from unified_capture import generated_sequences, sorted_like

from tte_hf.models.tte.ecr import TASK_PROMPTS
from tte_hf.models.tte.inputs import build_messages, embedder_system_prompt, embedder_text, render_prompt
from tte_hf.models.tte.reasoner_base import ReasoningBackend
from tte_hf.reasoning import generate_ecr
from tte_hf.sentence_transformers import build_sentence_transformer
from tte_hf.training import train_head
from tte_hf.training.data import DatasetSpec, load_pairs
from tte_hf.training.head_module import HeadTrainingModule
from tte_hf.training.pair_dataset import side_input
from tte_hf.training.sft_data import sft_rows
from tte_hf.training.train_reasoner import ECR_TRAINING_TEMPLATE

TASK = "vqa"
INSTRUCTION = "Answer the question about the picture."
# Not what the ECR parser would write (doubled space, newlines): the paths must not re-format it.
TRACE = "<think>the red bus  is left of\nthe car</think>\n red bus"
VISION = "<|vision_start|><|image_pad|><|vision_end|>"
# One row per input kind: (id, text, has image)
ROWS = [("text", "which vehicle is red", False), ("image", "", True), ("both", "what is left of the car", True)]


def expected_text(text: str, has_image: bool, trace: str) -> str:
    """The reasoner's generation sequence for one input, written from Qwen2-VL's chat template."""
    words = " ".join(w for w in (INSTRUCTION, text) if w)
    return (
        f"<|im_start|>system\n{TASK_PROMPTS[TASK]}<|im_end|>\n"
        f"<|im_start|>user\n{VISION if has_image else ''}{words}<|im_end|>\n"
        f"<|im_start|>assistant\n{trace}<|im_end|>"
    )


class FixedReasoner(ReasoningBackend):
    """Answers every request with ``TRACE`` (text only, no token ids)."""

    name = "fixed"

    def generate(self, requests):
        return [TRACE for _ in requests]


def _rows(batch) -> list[list[int]]:
    """Each row's ids where the attention mask is on."""
    mask = batch["attention_mask"].bool()
    return [batch["input_ids"][i][mask[i]].tolist() for i in range(mask.shape[0])]


@pytest.fixture(scope="module")
def setting(tiny_vlm, tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    Image.effect_noise((56, 42), 60).convert("RGB").save(root / "img.png")
    data = root / "train.jsonl"
    rows = [
        {"id": key, "qry": text, "qry_image_path": "img.png" if image else "", "pos_text": f"target {key}"}
        for key, text, image in ROWS
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    embedder_ecr = root / "ecr.jsonl"  # what a separate embedder's recipe reads: `ecr` as given
    embedder_ecr.write_text("".join(json.dumps({"id": key, "ecr": TRACE}) + "\n" for key, _, _ in ROWS))
    generated = root / "generated.jsonl"  # as `generate-ecr` writes it (parsed `ecr`, `raw` output)
    config = {"input": str(data), "image_root": str(root), "task": TASK, "output": str(generated), "progress": False}
    generate_ecr(config, reasoner=FixedReasoner())
    spec = {"name": "c", "path": str(data), "image_root": str(root), "task": TASK, "instruction": INSTRUCTION}

    processor = AutoProcessor.from_pretrained(tiny_vlm)
    image = Image.open(root / "img.png").convert("RGB")
    expected = {}
    for key, text, has_image in ROWS:
        string = expected_text(text, has_image, TRACE)
        # The same string as the processor's own template renders the conversation (minus its final "\n").
        conversation = [
            {"role": "system", "content": TASK_PROMPTS[TASK]},
            {"role": "user", "content": [{"type": "image"}] * has_image + [{"type": "text", "text": text}]},
            {"role": "assistant", "content": TRACE},
        ]
        if not text:
            conversation[1]["content"] = [{"type": "image"}, {"type": "text", "text": INSTRUCTION}]
        else:
            conversation[1]["content"][-1]["text"] = f"{INSTRUCTION} {text}"
        assert processor.apply_chat_template(conversation, tokenize=False) == string + "\n"
        ids = processor(text=[string], images=[image] if has_image else None, return_tensors="pt").input_ids[0]
        expected[key] = ids.tolist()
    end_id = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert all(ids[-1] == end_id for ids in expected.values())
    return {
        "root": root,
        "image": image,
        "spec": spec,
        "embedder_ecr": str(embedder_ecr),
        "generated": str(generated),
        "expected": expected,
        "processor": processor,
        "end_id": end_id,
    }


def _st_input(text, has_image, image, trace=TRACE):
    item = {"task": TASK, **({"text": text} if text else {}), **({"image": image} if has_image else {})}
    return item | ({"reasoning": trace} if trace is not None else {})


def _save_unified(tiny_vlm, processor, folder: Path) -> str:
    """A unified model (1-layer head) on the tiny backbone, saved with its processor."""
    from tte_hf.models.tte.modeling_tte import TTEUnifiedModel

    TTEUnifiedModel.from_backbone(tiny_vlm, head_type="mhsa", head_kwargs={"head_num_layers": 1}).save_pretrained(
        folder
    )
    processor.save_pretrained(folder)
    return str(folder)


def test_every_path_reads_the_reasoners_generation_sequence(setting, tiny_vlm, tmp_path, monkeypatch):
    expected, processor, image = setting["expected"], setting["processor"], setting["image"]
    want = [expected[key] for key, _, _ in ROWS]
    images = [image for _, _, has_image in ROWS if has_image]
    seen: dict[str, list[list[int]]] = {}

    # 1. the ST embedder module (reasoning given as the input's trace, instruction from the ST prompt)
    st = build_sentence_transformer(tiny_vlm, prompts={"query": INSTRUCTION})
    assert st[1].get_config_dict()["pooling_mode"] == "lasttoken"
    features = st[0].preprocess([_st_input(t, i, image) for _, t, i in ROWS], prompt=INSTRUCTION, task="query")
    seen["TTETransformer.preprocess"] = _rows(features)
    # The pooled position is the end token: the embedding is the backbone's final state there, read
    # from a raw transformers forward of each expected sequence alone.
    backbone = AutoModelForImageTextToText.from_pretrained(tiny_vlm).eval()
    pooled = []
    for (_, text, has_image), ids in zip(ROWS, want):
        string = expected_text(text, has_image, TRACE)
        row = processor(text=[string], images=[image] if has_image else None, return_tensors="pt")
        assert row.input_ids[0].tolist() == ids
        end = max(i for i, token in enumerate(ids) if token == setting["end_id"])
        with torch.no_grad():
            pooled.append(backbone(**row, output_hidden_states=True).hidden_states[-1][0, end])
    reference = torch.nn.functional.normalize(torch.stack(pooled), dim=-1)
    got = st.encode([_st_input(t, i, image) for _, t, i in ROWS], prompt=INSTRUCTION, convert_to_tensor=True)
    torch.testing.assert_close(got, reference, atol=1e-5, rtol=0)

    # 2. TTEEmbedderModel fed through tte_hf.models.tte.inputs
    texts = [
        embedder_text(
            render_prompt(processor, build_messages(t, int(i), False, INSTRUCTION, embedder_system_prompt(TASK, True))),
            TRACE,
        )
        for _, t, i in ROWS
    ]
    seen["tte_hf.models.tte.inputs"] = _rows(processor(text=texts, images=images, padding=True, return_tensors="pt"))

    # 3. the embedder recipe's training rows (parsed-ECR file) through sentence-transformers' collator,
    # the dataset's instruction as the ST prompt, as `train_embedder` hands them to its trainer ...
    from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator

    from tte_hf.training.pair_dataset import pairs_dataset

    pairs = load_pairs(DatasetSpec.from_dict({**setting["spec"], "query_ecr": setting["embedder_ecr"]}, 0))
    datasets, instructions = pairs_dataset(pairs, [len(pairs)], ["c"])
    batch = SentenceTransformerDataCollator(preprocess_fn=st.preprocess, prompts=instructions)(
        [row | {"dataset_name": "c"} for row in datasets["c"]]
    )
    anchor = {key.removeprefix("anchor_"): value for key, value in batch.items() if key.startswith("anchor_")}
    seen["embedder training (ST collator)"] = _rows(anchor)
    # ... and the ST module the head trains through, on the same pairs
    cells = [side_input(pair.query, pair.task, token_ids=True) for pair in pairs]
    seen["HeadTrainingModule.preprocess"] = _rows(
        HeadTrainingModule(None, processor).preprocess(cells, prompt=pairs[0].instruction)
    )

    # 4. the unified head's training batches, from a generate-ecr file, captured inside `train_head`
    columns = []
    real_preprocess = HeadTrainingModule.preprocess

    def spy(self, cells, **kwargs):
        out = real_preprocess(self, cells, **kwargs)
        columns.append((cells, out))
        return out

    monkeypatch.setattr(HeadTrainingModule, "preprocess", spy)
    recipe = {
        "reasoner_name_or_path": tiny_vlm,
        "head_type": "mhsa",
        "head_num_layers": 1,
        "datasets": [{**setting["spec"], "query_ecr": setting["generated"]}],
        "per_device_train_batch_size": 3,
        "max_steps": 1,
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
        "dataloader_num_workers": 0,
        "output_dir": str(tmp_path / "head"),
    }
    train_head(recipe)
    monkeypatch.undo()
    cells, out = columns[0]  # the first batch's queries
    by_text = dict(zip([cell["text"] for cell in cells], _rows(out)))
    seen["unified head training"] = [by_text[text] for _, text, _ in ROWS]

    # 5. the unified ST module: a given trace (one forward pass) ...
    unified_dir = _save_unified(tiny_vlm, processor, tmp_path / "unified")
    trace_ids = processor.tokenizer(TRACE, add_special_tokens=False).input_ids
    unified = build_sentence_transformer(
        unified_dir, reasoning_task=TASK, max_new_tokens=len(trace_ids), prompts={"query": INSTRUCTION}
    )
    features = unified[0].preprocess([_st_input(t, i, image) for _, t, i in ROWS], prompt=INSTRUCTION, task="query")
    seen["TTEUnifiedTransformer (given trace)"] = _rows(features)

    # 6. ... and generate_and_embed inside it: the trace generated (forced to TRACE's tokens), the
    # sequence the head pools is prompt + generated ids + end token
    read = generated_sequences(
        unified, [_st_input(t, i, image, trace=None) for _, t, i in ROWS], monkeypatch, trace_ids
    )
    assert unified[0].last_reasoning == [TRACE] * len(ROWS)
    seen["generate_and_embed"] = sorted_like(read, want)

    # 7. the SFT recipe: prepare-sft rows rendered by TRL's collator with the recipe's training template
    rows = sft_rows(DatasetSpec.from_dict({**setting["spec"], "query_ecr": setting["embedder_ecr"]}, 0))
    collate = DataCollatorForVisionLanguageModeling(
        processor, assistant_only_loss=True, chat_template=Path(ECR_TRAINING_TEMPLATE).read_text()
    )
    sft = collate(
        [{"images": [Image.open(p).convert("RGB") for p in row["images"]], "messages": row["messages"]} for row in rows]
    )
    trained, supervised = [], []
    for i in range(len(rows)):
        labelled = (sft["labels"][i] != -100).nonzero().flatten()
        trained.append(sft["input_ids"][i, : labelled[-1] + 1].tolist())  # nothing after it is learned from
        supervised.append(sft["input_ids"][i, labelled].tolist())
    seen["SFT (prompt + completion)"] = trained
    completion = processor.tokenizer(TRACE + "<|im_end|>", add_special_tokens=False).input_ids
    assert supervised == [completion] * len(rows), "SFT must supervise exactly the trace and the end token"

    wrong = {path: ids for path, ids in seen.items() if ids != want}
    assert not wrong, f"paths off the contract: {sorted(wrong)}"


def test_unified_module_keeps_each_rows_own_trace(setting, tiny_vlm, tmp_path):
    """Rows with different given traces in one batch: each row reads its own trace (the module tokenizes
    the traces of a batch in one call and must put each back on its row)."""
    processor, image = setting["processor"], setting["image"]
    unified_dir = _save_unified(tiny_vlm, processor, tmp_path / "unified")
    unified = build_sentence_transformer(unified_dir, reasoning_task=TASK, prompts={"query": INSTRUCTION})
    traces = [f"<think>row {n}{' and more' * n}</think> answer {n}" for n in range(len(ROWS))]
    inputs = [_st_input(t, i, image, trace=trace) for (_, t, i), trace in zip(ROWS, traces)]
    features = unified[0].preprocess(inputs, prompt=INSTRUCTION, task="query")
    want = [
        processor(
            text=[expected_text(text, has_image, trace)], images=[image] if has_image else None, return_tensors="pt"
        )
        .input_ids[0]
        .tolist()
        for (_, text, has_image), trace in zip(ROWS, traces)
    ]
    assert _rows(features) == want
