"""Research tools above the engine: the quality evaluator, the FF++ benchmark and the quality grid."""
