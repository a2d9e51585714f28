"""The figures ``spkeras reproduce`` makes, by name, with what each shows: a light list that the
CLI offers without importing the reproduction machinery (:mod:`spkeras.reproduce` builds each)."""

FIGURES = {
    "fig3a": "ablation of CN, TRE and CMB",
    "fig3b": "accuracy at training checkpoints",
    "fig3c": "accuracy vs T",
    "fig3d": "accuracy vs MOps",
    "fig3e": "MOps vs T",
    "fig4": "b-bit weights",
    "fig5": "spike-count distributions",
    "table2": "latency for near-zero loss",
}
