"""Analyses of frozen feature sequences: SSR-DFD linear probes, fusion, protocols, shortcut audits, reports.

The inputs are :class:`havic.features.records.FeatureSequence` records (or their (T, D) tensors)
keyed by video id; nothing here runs an encoder.

==================  ==============================================================================
module              what it holds
==================  ==============================================================================
``pooling``         padding, masks and temporal pooling (LSE, mean, max, log-mean-exp)
``heads``           per-frame heads: linear (the paper) and a small Transformer
``probes``          :class:`FrameProbe` (L2 norm, head, pooling) and its loss and probabilities
``training``        :class:`ProbeModule` (Lightning), data loading, :func:`train_probe`, scoring
``inputs``          feature-store sequences by name (``A+B``: early fusion) and rows from its index
``ssr_checkpoint``  import of the probes SSR-DFD released; safetensors export of ours
``fusion``          early and late fusion, score correlations, relative gains
``protocols``       the SSR binary task, train-on-X-test-on-Y matrix in the Table 2 layout
``audits``          length audit and leading-silence audit
``reports``         metrics.json, markdown matrix, heatmaps, per-video CSV
==================  ==============================================================================
"""
