"""The generation engine: manifest, regions, ONNX Runtime sessions and the model kinds behind one interface."""
