"""release_free_heap hands freed heap pages back: what a CPU rank calls between training and sampling."""

import sys

import psutil
import pytest
import torch

from nemo_grpo.utils.memory import release_free_heap


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_tensors_in_the_middle_of_the_heap_go_back_to_the_system():
    # 64 KiB tensors come from the heap (below glibc's mmap threshold); freeing every other one
    # leaves holes that free() alone cannot return, because live blocks sit after them
    blocks = [torch.ones(16 * 1024) for _ in range(4000)]  # 4000 x 64 KiB = 250 MiB
    del blocks[::2]
    rss = psutil.Process().memory_info().rss
    assert release_free_heap() is True
    freed = rss - psutil.Process().memory_info().rss
    assert freed > 60 * 2**20, f"only {freed / 2**20:.0f} MiB returned of the 125 MiB freed"
    assert float(sum(b.sum() for b in blocks[:10])) == 10 * 16 * 1024  # the live tensors are intact
