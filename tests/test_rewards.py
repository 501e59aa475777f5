"""GRPO rewards: each equals a hand-computed case."""

import math

import pytest
import torch

from tte_hf.training.data import PairExample, Side
from tte_hf.training.rewards import ECRFormatReward, RetrievalReward, completion_text


@pytest.mark.parametrize(
    ("text", "num_tokens", "expected"),
    [
        ("<think>red circle, top left</think>\nred circle", 20, 1.0),
        ("<think>red circle</think>\n" + "word " * 40, 20, 0.5),  # final part over 32 words
        ("<think>red circle</think>", 20, 0.5),  # no final part
        ("red circle", 20, 0.5),  # no tags: the whole text is a (short) final part
        ("<think>red <think>circle</think> x</think> y", 20, 0.5),  # doubled tags
        ("<think>red circle</think> red", 64, 0.0),  # cut at the length cap: never ended
        ("", 3, 0.0),
    ],
)
def test_format_reward_hand_cases(text, num_tokens, expected):
    reward = ECRFormatReward(max_final_words=32, max_completion_length=64)
    assert reward([[{"role": "assistant", "content": text}]], completion_ids=[[0] * num_tokens]) == [expected]
    assert reward.score(text, num_tokens) == expected


def test_completion_text_reads_plain_and_conversational_completions():
    assert completion_text("abc") == "abc"
    assert (
        completion_text([{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "image"}]}]) == "a"
    )


class FakeEmbedder:
    """Fixed vectors: queries by their trace's final part, documents by their text; records what it read."""

    def __init__(self, queries, documents):
        self.queries, self.documents, self.encoded_documents, self.traces = queries, documents, [], []

    def encode_query(self, inputs, **_):
        self.traces += [item["reasoning"] for item in inputs]
        return torch.tensor([self.queries[item["reasoning"].rsplit("\n", 1)[-1]] for item in inputs])

    def encode_document(self, inputs, **_):
        self.encoded_documents += [item["text"] for item in inputs]
        return torch.tensor([self.documents[item["text"]] for item in inputs])


def _pair(answer, negative=None):
    neg = Side(negative) if negative else None
    return PairExample(answer, Side("what is it?", ("img.png",)), Side(answer), neg, task="vqa")


def test_retrieval_reward_is_the_positives_softmax_probability_over_in_batch_and_hard_negatives():
    documents = {"cat": [1.0, 0.0], "dog": [0.0, 1.0], "fox": [0.6, 0.8]}
    queries = {"cat": [0.8, 0.6], "dog": [0.6, 0.8], "?": [1.0, 0.0]}
    pairs = [_pair("cat"), _pair("dog", negative="fox")]
    embedder = FakeEmbedder(queries, documents)
    reward = RetrievalReward(embedder, pairs, temperature=0.5)
    completions = ["<think>x</think>cat", "<think>x</think>?", "<think>x</think>dog"]
    got = reward(completions=completions, pair_index=[0, 0, 1])
    # The embedder reads each trace as a live reasoner's would reach it: parsed, in the full ECR form.
    assert embedder.traces[0] == "<think>\nx\n</think>\n\ncat"

    def softmax_of_first(*scores):
        return math.exp(scores[0] / 0.5) / sum(math.exp(s / 0.5) for s in scores)

    # Pair 0 (no hard negative): candidates cat (positive), dog (in batch).
    # Pair 1: candidates dog (positive), cat (in batch), fox (its hard negative).
    expected = [
        softmax_of_first(0.8, 0.6),
        softmax_of_first(1.0, 0.0),
        softmax_of_first(0.8, 0.6, 0.6 * 0.6 + 0.8 * 0.8),
    ]
    assert got == pytest.approx(expected, abs=1e-6)
    # Targets are encoded once each, and not again on the next call.
    assert sorted(embedder.encoded_documents) == ["cat", "dog", "fox"]
    reward(completions=completions, pair_index=[0, 0, 1])
    assert sorted(embedder.encoded_documents) == ["cat", "dog", "fox"]


def test_dataset_candidates_score_every_target_of_the_data_once():
    """candidates='dataset': the softmax runs over every distinct target of the rows (positives and hard
    negatives), whatever the batch holds; the corpus is embedded once."""
    documents = {"cat": [1.0, 0.0], "dog": [0.0, 1.0], "fox": [0.6, 0.8]}
    queries = {"cat": [0.8, 0.6], "dog": [0.6, 0.8]}
    pairs = [_pair("cat"), _pair("dog", negative="fox"), _pair("cat", negative="dog")]
    embedder = FakeEmbedder(queries, documents)
    reward = RetrievalReward(embedder, pairs, temperature=0.5, candidates="dataset")
    # A batch with only row 0: in-batch scoring would have no negative at all (reward 1).
    got = reward(completions=["<think>x</think>cat", "<think>x</think>dog"], pair_index=[0, 0])

    def probability(query, target):
        scores = {name: sum(a * b for a, b in zip(query, vector)) for name, vector in documents.items()}
        return math.exp(scores[target] / 0.5) / sum(math.exp(v / 0.5) for v in scores.values())

    assert got == pytest.approx([probability([0.8, 0.6], "cat"), probability([0.6, 0.8], "cat")], abs=1e-6)
    assert sorted(embedder.encoded_documents) == ["cat", "dog", "fox"]
    reward(completions=["<think>x</think>dog"], pair_index=[1])
    assert sorted(embedder.encoded_documents) == ["cat", "dog", "fox"]
    without_negatives = RetrievalReward(FakeEmbedder(queries, documents), pairs[:2], 0.5, hard_negatives=False, candidates="dataset")  # fmt: skip
    assert without_negatives(completions=["<think>x</think>cat"], pair_index=[0]) == pytest.approx(
        [math.exp(0.8 / 0.5) / (math.exp(0.8 / 0.5) + math.exp(0.6 / 0.5))], abs=1e-6
    )


def test_retrieval_reward_errors_name_the_problem():
    reward = RetrievalReward(FakeEmbedder({}, {}), [_pair("cat")])
    with pytest.raises(IndexError, match="pair_index 3"):
        reward(completions=["a"], pair_index=[3])
    with pytest.raises(ValueError, match="temperature"):
        RetrievalReward(None, [], temperature=0)
    with pytest.raises(ValueError, match="candidates must be one of"):
        RetrievalReward(None, [], candidates="corpus")
