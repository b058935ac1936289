"""release_free_heap hands freed heap pages back: what a CPU rank calls between training and sampling."""

import sys

from pathlib import Path

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


REPO = str(Path(__file__).resolve().parents[3])
RETAINED = """
import sys, psutil, torch
from nemo_grpo.utils.memory import bound_heap_growth
print(bound_heap_growth() if sys.argv[1] == "bound" else "unbound")
torch.ones(5 * 2**20)  # a freed 20 MiB block: glibc's default then serves blocks below 20 MiB from the heap
blocks = [torch.ones(10 * 2**18) for _ in range(40)]  # 40 x 10 MiB
rss = psutil.Process().memory_info().rss
del blocks[::2]  # 200 MiB freed
print((rss - psutil.Process().memory_info().rss) / 2**20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_bounded_heap_gives_freed_step_sized_tensors_back_at_once():
    """A CPU rank's heap growth is bounded: a 10 MiB tensor freed in the middle of the heap goes back
    to the system as it is freed, where glibc's default would keep it (its threshold had risen)."""
    import os
    import subprocess

    def freed(mode: str, **env) -> tuple[str, float]:
        out = subprocess.run([sys.executable, "-c", RETAINED, mode], capture_output=True, text=True, check=True, cwd=REPO,
                             env={k: v for k, v in {**os.environ, **env}.items() if v is not None})
        flag, mib = out.stdout.split()
        return flag, float(mib)

    assert freed("unbound", MALLOC_MMAP_THRESHOLD_=None)[1] < 20  # the holes stay in the heap
    flag, mib = freed("bound", MALLOC_MMAP_THRESHOLD_=None)
    assert flag == "True" and mib > 180
    assert freed("bound", MALLOC_MMAP_THRESHOLD_="131072")[0] == "False"  # the user's setting wins
