"""Many runs: agents × levels × seeds, resumable, locally or on a Ray cluster
(`python -m evaluation suite`)."""
