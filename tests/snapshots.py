"""Where the tests' fake GPUs live: the NVML snapshots of tests/fixtures/nvml.

A module of its own, not conftest.py: several folders have a conftest, and `import conftest`
gets whichever pytest loaded last.
"""

from pathlib import Path

NVML_FIXTURES = Path(__file__).parent / "fixtures" / "nvml"
