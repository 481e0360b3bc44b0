"""Training-side code (torch): the generator network, the drifting loss, the trainer and ONNX export.

Never imported by the inference container (process.py, preprocessing/, engine/, postprocessing/).
"""
