import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvjob.data.corpus import IGNORE_INDEX, chunk, chunk_starts, pad_batch, system_text
from lvjob.data.llmtime import parse


@given(st.integers(1, 3000), st.integers(2, 800))
def test_chunks_cover_every_token_in_order(n, context):
    ids = list(range(n))
    chunks = chunk(ids, context)
    assert chunks[0][0] == 0 and chunks[-1][-1] == n - 1
    covered = sorted({t for c in chunks for t in c})
    assert covered == ids


@given(st.integers(1, 3000), st.integers(2, 800))
def test_consecutive_chunks_overlap_by_half_the_context(n, context):
    chunks = chunk(list(range(n)), context)
    assert all(len(c) <= context for c in chunks)
    for a, b in zip(chunks, chunks[1:]):
        assert len(a) == context
        assert b[0] == a[0] + context - context // 2
        assert len(set(a) & set(b)) == min(context // 2, len(b))


def test_chunk_windows_for_a_reference_series():
    # 100 points x 12 tokens - 1 = 1199 tokens at context 512: windows at 0, 256, 512, 768.
    assert chunk_starts(1199, 512) == [0, 256, 512, 768]


def test_a_sequence_shorter_than_the_context_is_one_chunk():
    assert chunk([1, 2, 3], 512) == [[1, 2, 3]]


def test_context_length_below_two_is_refused():
    with pytest.raises(ValueError, match="context_length"):
        chunk([1, 2, 3], 1)


def test_padding_is_masked_out_of_attention_and_loss():
    batch = pad_batch([[5, 6, 7], [8]], context_length=4, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert batch["labels"].tolist() == [[5, 6, 7, IGNORE_INDEX], [8, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]]


def test_pad_batch_refuses_a_chunk_longer_than_the_context():
    with pytest.raises(ValueError, match="chunk 0"):
        pad_batch([[1, 2, 3]], context_length=2, pad_id=0)


def test_system_text_is_the_whole_series_scaled_on_itself():
    t = np.linspace(0, 6, 50)
    series = np.stack([2 + np.sin(t), 1 + np.cos(t)], axis=1)
    parsed = parse(system_text(series, decimals=3, alpha=0.99, beta=0.3))
    assert parsed.ok and parsed.values.shape == (50, 2)
    assert parsed.values.min() > 0
