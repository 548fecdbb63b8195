"""grokemu: a local all-in-one emulator of Datagrok's plugin-container system."""

__version__ = "0.1.0"
