"""Rolling a KV cache back must leave it exactly as if the dropped tokens had never been seen."""
import pytest
import torch

from methods.core import cache_len, compact_cache, crop_cache, forward, new_cache
from tests.conftest import tiny_llama

MODEL = tiny_llama(0)


def test_crop_then_continue_equals_fresh_forward():
    a, b, c = torch.tensor([[3, 9, 27, 81]]), torch.tensor([[5, 6, 7]]), torch.tensor([[11, 12]])
    cache = new_cache(MODEL)
    forward(MODEL, cache, a)
    forward(MODEL, cache, b)
    assert cache_len(cache) == 7
    crop_cache(cache, 4)
    assert cache_len(cache) == 4
    rolled = forward(MODEL, cache, c)
    fresh = forward(MODEL, new_cache(MODEL), torch.cat([a, c], dim=1))[:, -2:]
    torch.testing.assert_close(rolled, fresh, rtol=1e-5, atol=1e-5)


def test_crop_to_same_length_is_a_no_op_and_growing_is_refused():
    cache = new_cache(MODEL)
    forward(MODEL, cache, torch.tensor([[1, 2, 3]]))
    crop_cache(cache, 3)
    assert cache_len(cache) == 3
    with pytest.raises(ValueError, match="cannot crop"):
        crop_cache(cache, 5)


def test_compact_keeps_the_prefix_and_chosen_rows_as_if_only_they_had_been_seen():
    """A token tree's accepted path: rows 0, 2 and 5 of a 6-token block after a 4-token prefix. Each row is
    fed at its own position (as a tree block is), so after compaction the cache is the one a chain of the
    kept tokens would have built."""
    prefix, block = torch.tensor([[3, 9, 27, 81]]), torch.tensor([[5, 6, 7, 8, 10, 13]])
    rows = [0, 2, 5]
    cache = new_cache(MODEL)
    forward(MODEL, cache, prefix)
    depth = torch.tensor([[0, 1, 1, 2, 2, 2]])  # rows 0 -> 2 -> 5 form a path: positions 4, 5, 6
    sees = torch.zeros(6, 6, dtype=torch.bool)
    for r, ancestors in enumerate([[0], [0, 1], [0, 2], [0, 1, 3], [0, 1, 4], [0, 2, 5]]):
        sees[r, ancestors] = True
    mask = torch.cat([torch.ones(6, 4, dtype=torch.bool), sees], dim=1)[None, None]
    forward(MODEL, cache, block, attention_mask=mask, position_ids=4 + depth)
    compact_cache(cache, 4, rows)
    assert cache_len(cache) == 7
    after = forward(MODEL, cache, torch.tensor([[11, 12]]))
    kept = torch.cat([prefix, block[:, rows], torch.tensor([[11, 12]])], dim=1)
    fresh = forward(MODEL, new_cache(MODEL), kept)[:, -2:]
    torch.testing.assert_close(after, fresh, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="sorted"):
        compact_cache(cache, 4, [2, 1])
