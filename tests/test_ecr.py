import pytest

from tte_hf.models.tte.ecr import MMEB_TRAIN_TASKS, PROMPT_VERSION, TASK_PROMPTS, TASKS, parse_ecr, task_prompt
from tte_hf.models.tte.inputs import build_messages

META_TASKS = (
    "classification",
    "vqa",
    "retrieval",
    "grounding",
    "video_classification",
    "video_qa",
    "video_retrieval",
    "moment_retrieval",
    "visdoc",
    "generic",
)

# raw output -> (thought, final, issues)
MALFORMED = [
    ("<think> a red bus </think> bus", "a red bus", "bus", ()),
    ("<think>\n step one\n\n\n\n step two \n</think>\n\nyes", "step one\n\nstep two", "yes", ()),
    ("<THINK>upper</Think> fine", "upper", "fine", ()),
    ("< think >spaced</ think > ok", "spaced", "ok", ()),
    ("", "", "", ("empty",)),
    (None, "", "", ("empty",)),
    ("<think></think>", "", "", ("empty",)),
    ("<|im_end|>", "", "", ("special_tokens", "empty")),
    ("   \n ", "", "", ("empty",)),
    ("just an answer", "", "just an answer", ("no_tags",)),
    ("reasoning only </think> final", "reasoning only", "final", ("missing_open_tag",)),
    ("<think> cut off while reason", "cut off while reason", "", ("missing_close_tag",)),
    ("<think><think> a </think></think> b", "a", "b", ("doubled_tags",)),
    ("<think> a </think> b <think> c </think> d", "a b c", "d", ("doubled_tags",)),
    ("<think> a </think> b <think> c", "a", "b c", ("doubled_tags",)),
    ("<think> a </think> cat<|im_end|><|endoftext|><|endoftext|>", "a", "cat", ("special_tokens",)),
    ("<|im_start|>assistant\n<think> a<|image_pad|> </think> dog</s>", "assistant\na", "dog", ("special_tokens",)),
]


@pytest.mark.parametrize("raw,thought,final,issues", MALFORMED)
def test_parse_ecr_repairs_malformed_traces(raw, thought, final, issues):
    ecr = parse_ecr(raw)
    assert (ecr.thought, ecr.final, ecr.issues) == (thought, final, issues)


def test_parse_ecr_caps_runaway_length_keeping_the_final_part():
    raw = "<think> " + "word " * 1000 + "</think> the label"
    ecr = parse_ecr(raw, max_chars=100)
    assert ecr.truncated and "truncated" in ecr.issues
    assert ecr.final == "the label"
    assert len(ecr.thought) + len(ecr.final) <= 100
    assert ecr.thought.startswith("word word") and not ecr.thought.endswith(" ")
    # a final part longer than the cap is cut too, and no thought survives
    long_final = parse_ecr("<think> a </think> " + "x" * 50, max_chars=20)
    assert (long_final.thought, long_final.final) == ("", "x" * 20)
    # within the cap nothing changes
    assert parse_ecr("<think> a </think> b", max_chars=100).issues == ()
    with pytest.raises(ValueError, match="max_chars"):
        parse_ecr("x", max_chars=0)


def test_for_embedder_modes():
    ecr = parse_ecr("<think> two dogs on grass </think> dogs")
    assert ecr.for_embedder("full") == "<think>\ntwo dogs on grass\n</think>\n\ndogs"
    assert ecr.for_embedder("final") == "dogs"
    # the canonical full form parses back to the same parts (idempotent)
    again = parse_ecr(ecr.for_embedder("full"))
    assert (again.thought, again.final, again.issues) == (ecr.thought, ecr.final, ())
    assert parse_ecr("only final").for_embedder("full") == "only final"
    assert parse_ecr("").for_embedder("full") == ""
    with pytest.raises(ValueError, match="'full' or 'final'"):
        ecr.for_embedder("thought")


@pytest.mark.parametrize("task", META_TASKS)
def test_every_meta_task_has_a_prompt_asking_for_the_trace_format(task, tiny_vlm):
    from transformers import AutoProcessor

    prompt = task_prompt(task)
    assert "<think>" in prompt and "</think>" in prompt and "final" in prompt
    # the prompt lands as the system turn of the reasoner's chat sequence
    processor = AutoProcessor.from_pretrained(tiny_vlm)
    rendered = processor.apply_chat_template(
        build_messages("what is this?", 1, system=prompt), tokenize=False, add_generation_prompt=True
    )
    assert rendered.startswith(f"<|im_start|>system\n{prompt}<|im_end|>")


def test_prompts_are_distinct_and_cover_the_meta_tasks():
    assert set(TASKS) == set(META_TASKS)
    assert len(set(TASK_PROMPTS.values())) == len(TASK_PROMPTS)
    assert PROMPT_VERSION
    assert set(MMEB_TRAIN_TASKS.values()) <= set(TASKS) and len(MMEB_TRAIN_TASKS) == 20


@pytest.mark.parametrize("bad", ["VQA", "video", "", None])
def test_unknown_task_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="Unknown ECR task .* use one of generic, classification, vqa"):
        task_prompt(bad)
