"""triptych.training.data.get_batch draws every valid window, and none beyond the data."""
import numpy as np
import pytest

from triptych.common.checks import InputError
from triptych.training.data import get_batch


@pytest.mark.parametrize("n, block", [(10, 4), (5, 4), (40, 1)])
def test_every_start_is_reachable_and_none_beyond(n, block):
    data = np.arange(n, dtype=np.int64)  # token = its own position, so x[:, 0] is the start
    starts = np.concatenate([get_batch(data, 64, block, seed=0, step=s)[0][:, 0] for s in range(20)])
    last = n - block - 1  # the window data[last : last + block] still has its target data[n - 1]
    assert set(starts.tolist()) == set(range(last + 1))
    x, y = get_batch(data, 8, block, seed=1, step=0)
    assert np.array_equal(y, x + 1) and y.max() <= n - 1


def test_too_short_data_is_rejected_by_name():
    get_batch(np.arange(5), 2, 4, 0, 0)  # block + 1 tokens: exactly one window
    with pytest.raises(InputError, match=r"^data: expected at least block_size \+ 1 = 5 tokens, got 4$"):
        get_batch(np.arange(4), 2, 4, 0, 0)
