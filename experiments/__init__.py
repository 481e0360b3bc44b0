"""The research wing: probes and experiment scripts that produced the studies in docs/studies/.

Nothing in the product (process, pipeline, preprocessing, postprocessing, engine, modelspec) or in the tools
(training, phantoms, evaluation) imports from here; experiments may import any of them and the benchmarks.
"""
