"""Caps on what a run keeps of a cell's outputs and of a block's log (bytes, UTF-8).

In a module of their own so the executor's traits can name them without importing the runner
(and nbclient) into the Jupyter server at start-up.
"""

#: Default caps.
DEFAULT_MAX_CELL_OUTPUT_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_BLOCK_LOG_BYTES = 10 * 1024 * 1024
#: The range either cap accepts (every setting is bounded).
MIN_OUTPUT_CAP_BYTES = 1024
MAX_OUTPUT_CAP_BYTES = 1024 * 1024 * 1024
