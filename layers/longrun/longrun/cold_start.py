"""What a function does at the end of its init (the last statement of its module).

Everything made while the function's modules were imported (modules, classes, functions, their constants) lives as
long as the execution environment. ``init_done`` moves it all out of the garbage collector's generations
(``gc.freeze``), so that the collections the first invocation triggers (building an AWS client loads and parses the
service's JSON model: hundreds of thousands of objects) do not walk it again and again. Measured on this project's
machine, building a DynamoDB client after importing Powertools took about 20 ms longer than after importing boto3
alone; after ``init_done`` it took the same (docs/benchmarks.md, section 4). Nothing frozen is freed later, which
costs nothing here: what a module holds is never freed anyway.
"""

from __future__ import annotations

import gc


def init_done() -> None:
    gc.freeze()
