"""Tests of pipeline/evaluation: the evaluator, the FF++ benchmark and the quality grid."""
