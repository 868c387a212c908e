"""copybench: how many times does the CPU copy network data, and what does it cost?"""

__version__ = "0.1.0"
