"""sonic_common.devices: the thread count inside and after the blocks that change it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from sonic_common.devices import set_torch_threads, torch_threads, torch_threads_at_most


@pytest.fixture
def three_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield
    torch.set_num_threads(before)


def test_torch_threads_sets_exactly_then_restores(three_threads: object) -> None:
    with torch_threads(5):
        assert torch.get_num_threads() == 5
    assert torch.get_num_threads() == 3
    with torch_threads(0):  # 0: unchanged
        assert torch.get_num_threads() == 3
    with pytest.raises(RuntimeError), torch_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("the count comes back after an exception too")
    assert torch.get_num_threads() == 3


def test_torch_threads_at_most_caps_on_the_cpu_only(three_threads: object) -> None:
    with torch_threads_at_most(2, torch.device("cpu")):
        assert torch.get_num_threads() == 2
    with torch_threads_at_most(8):  # never more than before
        assert torch.get_num_threads() == 3
    with torch_threads_at_most(1, torch.device("cuda")):  # a GPU device: unchanged
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == 3


def test_set_torch_threads(three_threads: object) -> None:
    assert set_torch_threads(2) == 2 == torch.get_num_threads()
    assert set_torch_threads(0) >= 1  # every core this process may use
