"""Analyses over runs and models, beyond the per-run profile.

thresholds   robustness thresholds, knee and robust zone of a one-knob sweep (pure, no torch)
sweeps       sweep summaries per model, from run results or the store
memory       quality against bytes of weights for every stored run of a set of models
modules      per-module error ||(W' - W) X|| of each modified weight on calibration inputs, ranked
attention    attention maps original / modified / difference for a prompt, layer and head
flips        a built-in cloze set from the corpora: accuracy of both models and the flips between them
claims       checks of the paper's claims (docs/metrics.md §6) as shapes and orderings
outliers     max |activation| per input channel before / after SmoothQuant smoothing, summarised per layer

Modules are imported explicitly (`from hemorrhage_core.analysis import thresholds`), so the light ones do not pull
in torch.
"""
