"""The test suite: Hypothesis properties of impl against reference and the spec."""
