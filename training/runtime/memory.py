"""Large CPU tensors on transparent huge pages, which makes the SAE step's passes over its code matrix steady.

PyTorch's CPU allocator asks the kernel for huge pages (``madvise``) on allocations of 2 MiB and more when
``THP_MEM_ALLOC_ENABLE`` is set; it reads the variable at each allocation. Measured with the paired SAE
bench on the 2-core machine, relu's step went from 0.60-0.88 of the dense-matmul ceiling across processes
(some processes stuck near 0.6) to 0.83-0.99 in every process (docs/bench.md).
"""

from __future__ import annotations

import os

HUGE_PAGES_VARIABLE = "THP_MEM_ALLOC_ENABLE"


def use_huge_pages() -> None:
    """Turn on huge pages for large CPU tensors, unless the environment already says otherwise."""
    os.environ.setdefault(HUGE_PAGES_VARIABLE, "1")
