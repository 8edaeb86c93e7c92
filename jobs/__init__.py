"""The training payload: `python -m jobs SPEC.json --out DIR` runs one seeded job (train.train)."""
