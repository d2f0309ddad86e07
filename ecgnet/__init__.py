"""ecgnet: config-driven ECG classification with PyTorch."""
__version__ = "0.1.0"
